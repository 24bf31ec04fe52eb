package reqpool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

func TestNewValidatesConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Workers: -1},
		{QueueSize: -1},
		{PerRequest: -1},
		{MaxFanout: -1},
		{SpareConns: -1},
		{RetryAfter: -time.Second},
		{Workers: 2, QueueSize: 3, MaxFanout: 6},
		{QueueSize: math.MaxInt},                 // Workers+QueueSize would overflow
		{Workers: 1, Adaptive: true},             // a ceiling below the floor
		{Workers: AdaptiveFloor, Adaptive: true}, // nowhere to move
	} {
		p, err := New(cfg)
		if !errors.Is(err, ErrInvalidConfig) || p != nil {
			t.Errorf("New(%+v) = %v, %v; want ErrInvalidConfig", cfg, p, err)
		}
	}
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Workers: DefaultWorkers, QueueSize: DefaultQueueSize, MaxFanout: DefaultMaxFanout,
		SpareConns: SpareConns, RetryAfter: DefaultRetryAfter}
	if got := p.Config(); !reflect.DeepEqual(got, want) {
		t.Errorf("zero Config became %+v, want %+v", got, want)
	}
	p, err = New(Config{Workers: 2, QueueSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Config().MaxFanout; got != 5 {
		t.Errorf("default MaxFanout with Workers+QueueSize=5 is %d, want 5", got)
	}
	if p, err := New(Config{Workers: AdaptiveFloor + 1, Adaptive: true}); err != nil || p.Stats().Limit != AdaptiveFloor+1 {
		t.Errorf("an adaptive pool of %d workers: %v; it starts at its ceiling", AdaptiveFloor+1, err)
	}
}

func TestFanoutRunsEveryQuery(t *testing.T) {
	p := newPool(t, Config{Workers: 3})
	ctx := handleCtx(t, p)
	out := make([]int, 50)
	qs := make([]Query, len(out))
	for i := range qs {
		qs[i] = Func(func(context.Context) error { out[i] = i * i; return nil })
	}
	if err := Fanout(ctx, qs...); err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if v != i*i {
			t.Fatalf("out[%d] = %d: Fanout returned before query %d ran", i, v, i)
		}
	}
	if s := p.Stats(); s.Submitted != 50 || s.Completed != 50 || s.Failed != 0 || s.Running != 0 || s.Queued != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestWorkersBoundAcrossRequests(t *testing.T) {
	const workers = 4
	p := newPool(t, Config{Workers: workers})
	var g gauge
	q := Func(func(context.Context) error {
		g.enter()
		defer g.exit()
		time.Sleep(time.Millisecond)
		return nil
	})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			ctx, release := p.NewContext(context.Background())
			defer release()
			errs <- Fanout(ctx, repeat(10, q)...)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if peak := g.peak.Load(); peak > workers || peak < 2 {
		t.Errorf("peak concurrency %d, want 2..%d", peak, workers)
	}
}

func TestPerRequestCap(t *testing.T) {
	p := newPool(t, Config{Workers: 8, PerRequest: 2})
	var g gauge
	q := Func(func(context.Context) error {
		g.enter()
		defer g.exit()
		time.Sleep(2 * time.Millisecond)
		return nil
	})
	if err := Fanout(handleCtx(t, p), repeat(12, q)...); err != nil {
		t.Fatal(err)
	}
	if peak := g.peak.Load(); peak != 2 {
		t.Errorf("a lone request ran %d queries at once, want PerRequest=2", peak)
	}
}

func TestFirstErrorCancelsSiblingsAndDropsQueued(t *testing.T) {
	eachLayout(t, inFirstErrorCancelsSiblingsAndDropsQueued)
}

func inFirstErrorCancelsSiblingsAndDropsQueued(t *testing.T, l layout) {
	p := l.pool(t, Config{Workers: 2})
	boom := errors.New("boom")
	var started atomic.Int32
	blocked := make(chan struct{})
	var sawCancel atomic.Bool
	qs := []Query{
		Func(func(ctx context.Context) error { // waits for cancellation by its sibling
			started.Add(1)
			close(blocked)
			<-ctx.Done()
			sawCancel.Store(errors.Is(context.Cause(ctx), boom))
			return ctx.Err()
		}),
		Func(func(context.Context) error {
			started.Add(1)
			<-blocked
			return boom
		}),
	}
	for range 8 {
		qs = append(qs, Func(func(context.Context) error { started.Add(1); return nil }))
	}
	err := Fanout(l.handle(t, p), qs...)
	var qe *QueryError
	if !errors.As(err, &qe) || qe.Index != 1 || !errors.Is(err, boom) {
		t.Fatalf("Fanout = %v, want *QueryError{Index: 1} wrapping boom", err)
	}
	if n := started.Load(); n != 2 {
		t.Errorf("%d queries started, want 2: the queued ones must be dropped", n)
	}
	if !sawCancel.Load() {
		t.Error("the running sibling's context was not cancelled with the failure as cause")
	}
	// The sibling that the failure cancelled is Cancelled, not Failed.
	if s := p.Stats(); s.Dropped != 8 || s.Failed != 1 || s.Cancelled != 1 {
		t.Errorf("stats %+v, want Dropped 8, Failed 1, Cancelled 1", s)
	}
}

func TestPanicBecomesError(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	err := Fanout(handleCtx(t, p),
		Func(func(context.Context) error { return nil }),
		Func(func(context.Context) error { panic("kaboom") }),
	)
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "kaboom" {
		t.Fatalf("Fanout = %v, want a *PanicError with value kaboom", err)
	}
	if !strings.Contains(string(pe.Stack), "TestPanicBecomesError") {
		t.Errorf("the stack does not show the panicking query:\n%s", pe.Stack)
	}
	// Its Error is one line, with the value and the function that panicked.
	if msg := pe.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "panic: kaboom (in github.com/reqpool/reqpool.TestPanicBecomesError.func2, at ") ||
		!strings.Contains(msg, "pool_test.go:") {
		t.Errorf("Error() = %q, want one line naming the value and the panicking function", msg)
	}
	// An error panic value stays reachable.
	err = Fanout(handleCtx(t, p), Func(func(context.Context) error { panic(context.Canceled) }))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Fanout = %v, want it to wrap the panic's error value", err)
	}
}

func TestGoexitInQueryFreesItsSlot(t *testing.T) {
	p := newPool(t, Config{Workers: 1})
	ctx := handleCtx(t, p)
	done := make(chan struct{})
	go func() { // Goexit ends this goroutine, the Fanout caller, as it would end a test
		defer close(done)
		_ = Fanout(ctx, Func(func(context.Context) error { runtime.Goexit(); return nil }), sleep(time.Hour))
	}()
	<-done
	// The pool must still be usable: the slot was given back and the
	// queued sibling dropped.
	if err := Fanout(ctx, Func(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Queued != 0 || s.Running != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestNilInputs: the exported functions given a nil where a value belongs
// do as documented, without a panic.
func TestNilInputs(t *testing.T) {
	p := newPool(t, Config{Workers: 1})
	p.Observe(nil)() // attaches nothing
	SizeDB(nil, p)
	db := sql.OpenDB(nilConnector{})
	defer db.Close()
	SizeDB(db, nil)
	if n := db.Stats().MaxOpenConnections; n != 0 {
		t.Errorf("SizeDB(db, nil) set MaxOpenConnections %d, want db unchanged", n)
	}
	SizeDB(db, p)
	if n := db.Stats().MaxOpenConnections; n != 1+SpareConns {
		t.Errorf("SizeDB(db, p) set MaxOpenConnections %d, want %d", n, 1+SpareConns)
	}
	if err := Fanout(handleCtx(t, p), Func(noop)); err != nil {
		t.Errorf("after Observe(nil): %v", err)
	}
}

// nilConnector is a driver.Connector that connects to nothing.
type nilConnector struct{}

func (nilConnector) Connect(context.Context) (driver.Conn, error) {
	return nil, errors.New("no database")
}
func (nilConnector) Driver() driver.Driver { return nil }

func TestFanoutRejectsBadInput(t *testing.T) {
	p := newPool(t, Config{Workers: 1, QueueSize: 2, MaxFanout: 3})
	ctx := handleCtx(t, p)
	noop := Func(func(context.Context) error { return nil })

	if err := Fanout(context.Background(), noop); !errors.Is(err, ErrNoHandle) {
		t.Errorf("without a handle: %v, want ErrNoHandle", err)
	}
	if err := Fanout(ctx, repeat(4, noop)...); !errors.Is(err, ErrTooManyQueries) {
		t.Errorf("4 queries with MaxFanout 3: %v, want ErrTooManyQueries", err)
	}
	// Every invalid Query: ErrInvalidQuery in a *QueryError with its
	// index, nothing run, no panic.
	var nilDB *sqlx.DB
	var dest []int
	var res sql.Result
	for name, q := range map[string]Query{
		"zero Query":                {},
		"Func(nil)":                 Func(nil),
		"Select(nil interface)":     Select(nil, &dest, "SELECT 1"),
		"Select(nil *sqlx.DB)":      Select(nilDB, &dest, "SELECT 1"),
		"Get(nil *sqlx.DB)":         Get(nilDB, &dest, "SELECT 1"),
		"Exec(nil *sqlx.DB)":        Exec(nilDB, "SELECT 1"),
		"ExecResult(nil interface)": ExecResult(nil, &res, "SELECT 1"),
		"ExecResult(nil *sqlx.DB)":  ExecResult(nilDB, &res, "SELECT 1"),
	} {
		var qe *QueryError
		if err := Fanout(ctx, noop, q); !errors.As(err, &qe) || qe.Index != 1 || !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("%s: %v, want *QueryError{Index: 1} wrapping ErrInvalidQuery", name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Fanout(cctx, noop); !errors.Is(err, context.Canceled) {
		t.Errorf("done context: %v, want context.Canceled", err)
	}
	if err := Fanout(ctx); err != nil {
		t.Errorf("no queries: %v", err)
	}
}

func TestQueueFullRejectsTheWholeFanout(t *testing.T) {
	p := newPool(t, Config{Workers: 1, QueueSize: 2})
	hold := make(chan struct{})
	running := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		ctx, release := p.NewContext(context.Background())
		defer release()
		first <- Fanout(ctx,
			Func(func(context.Context) error { close(running); <-hold; return nil }),
			sleep(0), // queued
		)
	}()
	<-running // 1 executing, 1 queued: one queue place is free

	var ran atomic.Int32
	count := Func(func(context.Context) error { ran.Add(1); return nil })
	ctx := handleCtx(t, p)
	err := Fanout(ctx, count, count)
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("2 queries for 1 free place: %v, want ErrQueueFull", err)
	}
	if ran.Load() != 0 {
		t.Errorf("%d queries of a rejected Fanout ran", ran.Load())
	}
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := Fanout(ctx, count, count); err != nil || ran.Load() != 2 {
		t.Errorf("once idle: %v, ran %d", err, ran.Load())
	}
	if s := p.Stats(); s.Rejected != 1 {
		t.Errorf("Rejected = %d, want 1", s.Rejected)
	}
}

func TestCancelDropsQueuedAndStopsRunning(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	parent, cancel := context.WithCancel(context.Background())
	ctx, release := p.NewContext(parent)
	defer release()
	var started atomic.Int32
	wave := make(chan struct{}, 2)
	q := Func(func(ctx context.Context) error {
		started.Add(1)
		wave <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	go func() { <-wave; <-wave; cancel() }()
	err := Fanout(ctx, repeat(20, q)...)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Fanout = %v, want context.Canceled", err)
	}
	if n := started.Load(); n != 2 {
		t.Errorf("%d queries started, want only the first wave of 2", n)
	}
	if s := p.Stats(); s.Running != 0 || s.Queued != 0 || s.Dropped != 18 {
		t.Errorf("after Fanout returned: %+v", s)
	}
}

func TestFanoutTimeoutDropsQueued(t *testing.T) {
	p := newPool(t, Config{Workers: 1})
	ctx, cancel := context.WithTimeout(handleCtx(t, p), 20*time.Millisecond)
	defer cancel()
	err := Fanout(ctx, repeat(10, sleep(time.Hour))...)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fanout = %v, want DeadlineExceeded", err)
	}
	if s := p.Stats(); s.Dropped != 9 || s.Queued != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestReleaseWaitsForStrayQueries(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	ctx, release := p.NewContext(context.Background())
	running := make(chan struct{})
	var finished atomic.Bool
	fanoutDone := make(chan error, 1)
	go func() { // a goroutine the "handler" did not wait for
		fanoutDone <- Fanout(ctx, Func(func(ctx context.Context) error {
			close(running)
			<-ctx.Done()
			finished.Store(true)
			return ctx.Err()
		}), sleep(time.Hour), sleep(time.Hour))
	}()
	<-running
	release()
	if !finished.Load() {
		t.Fatal("release returned while a query of the handle was still executing")
	}
	if s := p.Stats(); s.Running != 0 || s.Queued != 0 || s.Requests != 0 {
		t.Errorf("after release: %+v", s)
	}
	if err := <-fanoutDone; !errors.Is(err, context.Canceled) {
		t.Errorf("stray Fanout = %v", err)
	}
	if err := Fanout(ctx, sleep(0)); !errors.Is(err, context.Canceled) {
		t.Errorf("Fanout on a released handle = %v, want context.Canceled", err)
	}
}

// nested fans out width queries per level, depth levels below the top, and
// returns how many leaves ran.
func nested(ctx context.Context, depth, width int, leaf func()) error {
	qs := make([]Query, width)
	for i := range qs {
		qs[i] = Func(func(ctx context.Context) error {
			if depth == 0 {
				leaf()
				return nil
			}
			return nested(ctx, depth-1, width, leaf)
		})
	}
	return Fanout(ctx, qs...)
}

func TestNestedFanoutNeverDeadlocks(t *testing.T) { eachLayout(t, inNestedFanoutNeverDeadlocks) }

func inNestedFanoutNeverDeadlocks(t *testing.T, l layout) {
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("Workers=%d", workers), func(t *testing.T) {
			p := l.pool(t, Config{Workers: workers})
			var g gauge
			var leaves atomic.Int32
			leaf := func() {
				g.enter()
				defer g.exit()
				leaves.Add(1)
				time.Sleep(time.Millisecond)
			}
			// Several requests at once, so that every worker is a parent
			// waiting on children.
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for range 4 {
				wg.Go(func() {
					ctx, release := l.newContext(t, p)
					defer release()
					errs <- nested(ctx, 2, 3, leaf) // 3 → 9 → 27 leaves: nested two deep
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("nested Fanout deadlocked: %+v", p.Stats())
			}
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if n := leaves.Load(); n != 4*27 {
				t.Errorf("%d leaves ran, want %d", n, 4*27)
			}
			if peak := g.peak.Load(); peak > int64(workers) {
				t.Errorf("%d leaves executed at once, above Workers=%d", peak, workers)
			}
		})
	}
}

func TestShutdownLetsAdmittedWorkFinish(t *testing.T) {
	eachLayout(t, inShutdownLetsAdmittedWorkFinish)
}

func inShutdownLetsAdmittedWorkFinish(t *testing.T, l layout) {
	p, err := New(l.config(Config{Workers: 2}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, release := l.newContext(t, p)
	defer release()
	running := make(chan struct{}, 6)
	hold := make(chan struct{})
	var completed atomic.Int32
	q := Func(func(context.Context) error { running <- struct{}{}; <-hold; completed.Add(1); return nil })
	fanoutDone := make(chan error, 1)
	go func() { fanoutDone <- Fanout(ctx, repeat(6, q)...) }()
	<-running
	<-running

	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(context.Background()) }()
	// Once closed, new work is refused...
	for !p.closedForTest() {
		runtime.Gosched()
	}
	if err := Fanout(ctx, q); !errors.Is(err, ErrClosed) {
		t.Errorf("Fanout after Shutdown = %v, want ErrClosed", err)
	}
	// ...and admitted work, queued included, still completes.
	close(hold)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := <-fanoutDone; err != nil || completed.Load() != 6 {
		t.Errorf("admitted Fanout = %v with %d of 6 completed", err, completed.Load())
	}
}

func TestShutdownCancelsWhenItsContextEnds(t *testing.T) {
	p, err := New(Config{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, release := p.NewContext(context.Background())
	defer release()
	wave := make(chan struct{}, 2)
	q := Func(func(ctx context.Context) error { wave <- struct{}{}; <-ctx.Done(); return ctx.Err() })
	fanoutDone := make(chan error, 1)
	go func() { fanoutDone <- Fanout(ctx, repeat(10, q)...) }()
	<-wave
	<-wave
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	// Shutdown returned at once; the queries, which honour their context,
	// end soon after, and their Fanout with them.
	if err := <-fanoutDone; !errors.Is(err, context.Canceled) || !errors.Is(err, ErrClosed) {
		t.Errorf("Fanout = %v, want one matching both context.Canceled and ErrClosed", err)
	}
	if s := p.Stats(); s.Running != 0 || s.Queued != 0 || s.Dropped != 8 {
		t.Errorf("after Shutdown: %+v", s)
	}
}

// TestShutdownKeepsItsDeadline: a query that ignores its context does not
// hold Shutdown past its context, as http.Server.Shutdown does not wait for
// a handler that ignores it; Stats shows the query until it returns.
func TestShutdownKeepsItsDeadline(t *testing.T) {
	p, err := New(Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, release := p.NewContext(context.Background())
	started, hold := make(chan struct{}), make(chan struct{})
	stubborn := Func(func(context.Context) error { close(started); <-hold; return nil })
	fanoutDone := make(chan error, 1)
	go func() { fanoutDone <- Fanout(ctx, stubborn, sleep(time.Hour)) }()
	<-started
	sctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Shutdown(sctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
	// Shutdown has returned while the stubborn query still runs.
	if s := p.Stats(); s.Running != 1 || s.Queued != 0 || s.Dropped != 1 {
		t.Errorf("after Shutdown: %+v, want the stubborn query running and the other dropped", s)
	}
	close(hold)
	if err := <-fanoutDone; !errors.Is(err, ErrClosed) {
		t.Errorf("Fanout = %v, want ErrClosed", err)
	}
	release()
	if s := p.Stats(); s.Running != 0 || s.Requests != 0 {
		t.Errorf("after the query returned: %+v", s)
	}
}

// TestConcurrentNestedFanouts: a query that makes two nested Fanouts at
// once (an errgroup of its own, say) completes, with one worker and with the
// request at its PerRequest cap: one nested caller borrows the query's slot,
// and serves the other's queries in it before giving it back.
func TestConcurrentNestedFanouts(t *testing.T) {
	for _, cfg := range []Config{{Workers: 1}, {Workers: 8, PerRequest: 1}} {
		p := newPool(t, cfg)
		ctx := handleCtx(t, p)
		var leaves atomic.Int32
		leaf := Func(func(context.Context) error { leaves.Add(1); return nil })
		err := Fanout(ctx, Func(func(qctx context.Context) error {
			errs := make(chan error, 2)
			for range 2 {
				go func() { errs <- Fanout(qctx, leaf, leaf, leaf) }()
			}
			return errors.Join(<-errs, <-errs)
		}))
		if err != nil || leaves.Load() != 6 {
			t.Errorf("%+v: Fanout = %v with %d of 6 leaves run", cfg, err, leaves.Load())
		}
	}
}

// TestStatsCancelledVersusFailed: a query that returns an error because its
// request ended counts as Cancelled, one that fails on its own as Failed,
// and one that never started as Dropped; a class's counts agree.
func TestStatsCancelledVersusFailed(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	ctx, cancel := context.WithCancel(handleCtx(t, p))
	started := make(chan struct{}, 2)
	blocked := Func(func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	done := make(chan error, 1)
	go func() { done <- Fanout(ctx, blocked, blocked, blocked) }() // 2 run, 1 waits
	<-started
	<-started
	cancel() // the client hangs up
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Fanout: %v, want context.Canceled", err)
	}
	boom := errors.New("boom")
	if err := Fanout(handleCtx(t, p), Func(func(context.Context) error { return boom })); !errors.Is(err, boom) {
		t.Fatalf("Fanout: %v, want boom", err)
	}
	s := p.Stats()
	want := ClassStats{Submitted: 4, Completed: 3, Failed: 1, Cancelled: 2, Dropped: 1}
	got := s.Classes[0]
	got.Running, got.Queued, got.Flows = 0, 0, 0
	if got != want || s.Submitted != 4 || s.Completed != 3 || s.Failed != 1 || s.Cancelled != 2 || s.Dropped != 1 {
		t.Errorf("Stats %+v, class %+v; want Completed 3 of which Failed 1 and Cancelled 2, and Dropped 1", s, s.Classes[0])
	}
}

// TestConnLimitDrop: when a database's connection limit drops below the
// queries running, no slot takes another query until they are fewer than
// the limit; the smallest limit of two databases holds; and clearing the
// limits runs Workers at once again. Counted, not timed.
func TestConnLimitDrop(t *testing.T) {
	p := newPool(t, Config{Workers: 4})
	var running, most atomic.Int64
	release := make(chan struct{})
	started := make(chan struct{}, 64)
	q := Func(func(context.Context) error {
		if n := running.Add(1); n > most.Load() {
			most.Store(n)
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- Fanout(handleCtx(t, p), repeat(16, q)...) }()
	for range 4 {
		<-started
	}
	a, b := new(int), new(int) // two databases
	p.sched.SetConnLimit(a, 3)
	p.sched.SetConnLimit(b, 2)
	if st := p.Stats(); st.Limit != 2 || st.LimitReason != LimitConnections {
		t.Fatalf("Stats: Limit %d, reason %q; want 2, %q", st.Limit, st.LimitReason, LimitConnections)
	}
	most.Store(running.Load())
	// Let the 4 running end one at a time: none starts until 2 remain.
	for range 2 {
		release <- struct{}{}
	}
	for range 2 { // two more may start now, one for each that ends
		release <- struct{}{}
		<-started
	}
	if n := running.Load(); n > 2 {
		t.Errorf("%d queries running under a limit of 2", n)
	}
	p.sched.SetConnLimit(b, 0) // b recovered: a's 3 holds
	if st := p.Stats(); st.Limit != 3 {
		t.Errorf("Stats.Limit %d with one database at 3, want 3", st.Limit)
	}
	p.sched.SetConnLimit(a, 0)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Limit != 4 || st.LimitReason != "" {
		t.Errorf("after the shortage: Limit %d, reason %q", st.Limit, st.LimitReason)
	}
}
