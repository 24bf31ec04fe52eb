package reqpool

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestDetach: work that a handler starts and that outlives its response.
// With the request's context it fails with ErrHandleReleased (which also
// matches context.Canceled); with Detach it runs, under the request's id,
// until Shutdown ends it.
//
// TestDetachInQuery: detached from a query, the work takes slots of its
// own, within Workers.
func TestDetach(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	type outcome struct {
		id, seen       string
		plain, blocked error
	}
	out := make(chan outcome, 1)
	returned := make(chan struct{}) // the handler has returned, and the middleware released the handle
	started := make(chan struct{})  // the detached work's second query runs
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		id := RequestID(r.Context())
		detached, release := Detach(r.Context())
		plain := context.WithoutCancel(r.Context())
		go func() {
			defer release()
			<-returned
			var o outcome
			o.id = id
			o.plain = Fanout(plain, sleep(0))
			if err := Fanout(detached, Func(func(ctx context.Context) error { o.seen = RequestID(ctx); return nil })); err != nil {
				o.seen = "error: " + err.Error()
			}
			o.blocked = Fanout(detached, Func(func(ctx context.Context) error {
				close(started)
				<-ctx.Done()
				return ctx.Err()
			}))
			out <- o
		}()
	}, func() { close(returned) })
	if r := get(context.Background(), c, srv.URL); r.err != nil || r.status != http.StatusOK {
		t.Fatalf("GET: %+v", r)
	}
	<-started
	// The detached query waits for its context: the pool is never idle, and
	// Shutdown's own ctx ends it, as it would a request's.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want its ctx's end: the detached work runs until then", err)
	}
	o := <-out
	if !errors.Is(o.plain, ErrHandleReleased) || !errors.Is(o.plain, context.Canceled) {
		t.Errorf("Fanout after the response, on the request's context: %v, want ErrHandleReleased matching context.Canceled", o.plain)
	}
	if o.seen != o.id || o.id == "" {
		t.Errorf("detached work saw request id %q, want the request's %q", o.seen, o.id)
	}
	if !errors.Is(o.blocked, ErrClosed) {
		t.Errorf("detached work at Shutdown: %v, want an error matching ErrClosed", o.blocked)
	}
}

// TestDetachWithoutHandle: no handle, no panic: Fanout says so.
func TestDetachWithoutHandle(t *testing.T) {
	ctx, release := Detach(context.Background())
	defer release()
	if err := Fanout(ctx, sleep(0)); !errors.Is(err, ErrNoHandle) {
		t.Errorf("Fanout on Detach of a context without a handle: %v, want ErrNoHandle", err)
	}
}

// TestDetachInQuery: work detached from inside a query, and run once the
// query has returned, takes a slot of its own: with one worker, it never
// runs beside another request's query.
func TestDetachInQuery(t *testing.T) {
	p := newPool(t, Config{Workers: 1})
	var running, most atomic.Int64
	started := make(chan struct{}, 8)
	q := Func(func(context.Context) error {
		started <- struct{}{}
		if n := running.Add(1); n > most.Load() {
			most.Store(n)
		}
		time.Sleep(5 * time.Millisecond)
		running.Add(-1)
		return nil
	})
	done := make(chan error, 1)
	err := Fanout(handleCtx(t, p), Func(func(ctx context.Context) error {
		detached, release := Detach(ctx)
		go func() {
			defer release()
			done <- Fanout(detached, q, q, q)
		}()
		// Were the detached Fanout nested, it would start in this query's
		// slot now; as it is not, it waits for the slot until we return.
		select {
		case <-started:
			t.Error("the detached Fanout started in its parent query's slot")
		case <-time.After(20 * time.Millisecond):
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	other := Fanout(handleCtx(t, p), q, q, q)
	if err := <-done; err != nil || other != nil {
		t.Fatalf("Fanouts: %v, %v", err, other)
	}
	if n := most.Load(); n > 1 {
		t.Errorf("%d queries ran at once with Workers 1", n)
	}
}
