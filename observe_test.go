package reqpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reqpool/reqpool/internal/sched"
)

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu       sync.Mutex // protects the fields below
	queries  []QueryRecord
	refusals []Refusal
}

func (r *recorder) QueryDone(_ context.Context, rec QueryRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries = append(r.queries, rec)
}

func (r *recorder) Refused(_ context.Context, ref Refusal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refusals = append(r.refusals, ref)
}

// outcomes returns the outcomes recorded, by query index.
func (r *recorder) outcomes() map[int]Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[int]Outcome{}
	for _, q := range r.queries {
		m[q.Index] = q.Outcome
	}
	return m
}

func TestObserve(t *testing.T) {
	p := newPool(t, Config{Workers: 1, QueueSize: 2, MaxFanout: 3})
	var rec recorder
	detach := p.Observe(&rec)
	ctx, release := p.newContext(context.Background(), "obs-1")
	defer release()

	// ok, error (which drops the third), in one slot: 0 ok, 1 error, 2 dropped.
	boom := errors.New("boom")
	err := Fanout(ctx, sleep(time.Millisecond), Func(func(context.Context) error { return boom }), sleep(0))
	if !errors.Is(err, boom) {
		t.Fatalf("Fanout = %v", err)
	}
	if got, want := rec.outcomes(), map[int]Outcome{0: OutcomeOK, 1: OutcomeError, 2: OutcomeDropped}; !maps.Equal(got, want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
	// A sibling that returns the context's error once the failure has
	// cancelled it is cancelled, not failed.
	rec.queries = nil
	pc := newPool(t, Config{Workers: 2})
	pc.Observe(&rec)
	ctx2a, release2a := pc.newContext(context.Background(), "obs-2")
	started := make(chan struct{})
	err = Fanout(ctx2a,
		Func(func(ctx context.Context) error { close(started); <-ctx.Done(); return ctx.Err() }),
		Func(func(context.Context) error { <-started; return boom }))
	release2a()
	if !errors.Is(err, boom) {
		t.Fatalf("Fanout = %v", err)
	}
	if got, want := rec.outcomes(), map[int]Outcome{0: OutcomeCancelled, 1: OutcomeError}; !maps.Equal(got, want) {
		t.Errorf("outcomes %v, want %v", got, want)
	}
	if st := pc.Stats(); st.Failed != 1 || st.Cancelled != 1 {
		t.Errorf("Stats: Failed %d, Cancelled %d; want 1 and 1, as the outcomes", st.Failed, st.Cancelled)
	}
	rec.queries = nil
	if err := Fanout(ctx, sleep(time.Millisecond), Func(func(context.Context) error { return boom }), sleep(0)); !errors.Is(err, boom) {
		t.Fatalf("Fanout = %v", err)
	}
	for _, q := range rec.queries {
		if q.RequestID != "obs-1" || q.Admitted.IsZero() || q.Finished.Before(q.Admitted) ||
			(q.Outcome != OutcomeDropped) == q.Started.IsZero() || q.Wait() < 0 || q.Run() < 0 {
			t.Errorf("record %+v", q)
		}
		if q.Outcome == OutcomeOK && q.Run() < time.Millisecond {
			t.Errorf("the 1 ms query ran %v", q.Run())
		}
	}
	rec.queries = nil
	if err := Fanout(ctx, Func(func(context.Context) error { panic("bug") })); err == nil {
		t.Fatal("a panic gave no error")
	}
	if got := rec.outcomes(); got[0] != OutcomePanic {
		t.Errorf("panic recorded as %v", got[0])
	}

	// Refusals, each with its reason.
	Fanout(ctx, repeat(4, sleep(0))...) // above MaxFanout
	hold := make(chan struct{})
	running := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Fanout(ctx, Func(func(context.Context) error { close(running); <-hold; return nil }), sleep(0), sleep(0))
	}()
	<-running
	Fanout(ctx, sleep(0)) // the queue is full
	close(hold)
	<-done
	p.Shutdown(context.Background())
	Fanout(ctx, sleep(0)) // closed
	want := []RefusalReason{RefusedTooMany, RefusedQueueFull, RefusedClosed}
	var got []RefusalReason
	for _, r := range rec.refusals {
		got = append(got, r.Reason)
		if r.RequestID != "obs-1" || r.Queries == 0 {
			t.Errorf("refusal %+v", r)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("refusals %v, want %v", got, want)
	}
	if s := p.Stats(); s.Rejected != 3 {
		t.Errorf("Stats.Rejected = %d, want 3", s.Rejected)
	}

	// Detached, it hears nothing more.
	detach()
	n := len(rec.queries)
	p2 := newPool(t, Config{})
	p2.Observe(&rec)()
	ctx2 := handleCtx(t, p2)
	Fanout(ctx2, sleep(0))
	if len(rec.queries) != n {
		t.Errorf("a detached observer was told of %d more queries", len(rec.queries)-n)
	}
	for _, s := range []string{OutcomeOK.String(), OutcomeError.String(), OutcomePanic.String(), OutcomeDropped.String(), OutcomeCancelled.String(),
		RefusedQueueFull.String(), RefusedTooMany.String(), RefusedClosed.String()} {
		if s == "unknown" {
			t.Error("a named value prints as unknown")
		}
	}
}

// funcObserver is an Observer of a non-comparable type.
type funcObserver func(QueryRecord)

func (f funcObserver) QueryDone(_ context.Context, rec QueryRecord) { f(rec) }
func (f funcObserver) Refused(context.Context, Refusal)             {}

// TestObserveDetach: detaching an Observer of any type removes that
// attachment alone, once, however often it is called.
func TestObserveDetach(t *testing.T) {
	p := newPool(t, Config{})
	var a, b atomic.Int32
	detachA := p.Observe(funcObserver(func(QueryRecord) { a.Add(1) }))
	p.Observe(funcObserver(func(QueryRecord) { b.Add(1) }))
	var rec recorder
	detach1 := p.Observe(&rec)
	p.Observe(&rec) // the same observer twice
	detachA()
	detachA()
	detach1()
	ctx := handleCtx(t, p)
	if err := Fanout(ctx, sleep(0)); err != nil {
		t.Fatal(err)
	}
	if a.Load() != 0 || b.Load() != 1 || len(rec.queries) != 1 {
		t.Errorf("after detaching: a told %d, b %d, rec %d times; want 0, 1, 1", a.Load(), b.Load(), len(rec.queries))
	}
}

// panicky is an Observer whose every call panics.
type panicky struct{ calls atomic.Int64 }

func (o *panicky) QueryDone(context.Context, QueryRecord) { o.calls.Add(1); panic("observer bug") }
func (o *panicky) Refused(context.Context, Refusal)       { o.calls.Add(1); panic("observer bug") }

// TestObserverPanicContained: through a real server, an Observer that
// panics on every call, on the callers' goroutines and on the pool's
// helpers, leaves every query's result and every response as they would
// be without it; the panic is logged once, and Observe(nil) attaches
// nothing.
func TestObserverPanicContained(t *testing.T) {
	var logged strings.Builder
	var logMu sync.Mutex
	log.SetOutput(writerFunc(func(b []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logged.Write(b)
	}))
	t.Cleanup(func() { log.SetOutput(os.Stderr) })

	p := newPool(t, Config{Workers: 2, MaxFanout: 8})
	o := &panicky{}
	p.Observe(nil)() // attaches nothing; its detach does nothing
	defer p.Observe(o)()
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		// 8 queries on 2 workers: helpers run some of them.
		var sum atomic.Int64
		qs := make([]Query, 8)
		for i := range qs {
			qs[i] = Func(func(context.Context) error { sum.Add(int64(i)); return nil })
		}
		if err := Fanout(r.Context(), qs...); err != nil {
			WriteError(w, r, err)
			return
		}
		// One refused: too many queries.
		if err := Fanout(r.Context(), repeat(9, Func(noop))...); !errors.Is(err, ErrTooManyQueries) {
			t.Errorf("a Fanout of 9 with MaxFanout 8: %v, want ErrTooManyQueries", err)
		}
		fmt.Fprint(w, sum.Load())
	}, nil)
	const requests = 20
	for range requests {
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "28" {
			t.Fatalf("%s %q, want 200 \"28\"", resp.Status, body)
		}
	}
	if n, want := o.calls.Load(), int64(requests*(8+1)); n != want {
		t.Errorf("the Observer was called %d times, want %d: every query and refusal", n, want)
	}
	if s := p.Stats(); s.Completed != requests*8 || s.Failed != 0 || s.Rejected != requests {
		t.Errorf("Stats %+v, want %d completed, none failed, %d rejected", s, requests*8, requests)
	}
	logMu.Lock()
	out := logged.String()
	logMu.Unlock()
	if n := strings.Count(out, "reqpool: Observer *reqpool.panicky panicked"); n != 1 || !strings.Contains(out, "observer bug") {
		t.Errorf("log, with %d reports of the panic, want 1:\n%s", n, out)
	}
}

// TestOutcomeValues: Ended converts the scheduler's outcomes to Outcome
// by value, so the two lists must stay in step.
func TestOutcomeValues(t *testing.T) {
	for _, c := range []struct {
		s sched.Outcome
		o Outcome
	}{
		{sched.OutcomeOK, OutcomeOK}, {sched.OutcomeError, OutcomeError}, {sched.OutcomePanic, OutcomePanic},
		{sched.OutcomeDropped, OutcomeDropped}, {sched.OutcomeCancelled, OutcomeCancelled},
	} {
		if Outcome(c.s) != c.o {
			t.Errorf("sched outcome %d converts to %v, want %v", c.s, Outcome(c.s), c.o)
		}
	}
}
