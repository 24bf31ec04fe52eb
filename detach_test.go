package reqpool

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestDetach: work that a handler starts and that outlives its response.
// With the request's context it fails with ErrHandleReleased (which also
// matches context.Canceled); with Detach it runs, under the request's id,
// until Shutdown ends it.
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v, want nil: it ends the detached work", err)
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
