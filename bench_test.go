package reqpool

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// The overhead of a Fanout of 8 no-op queries, next to the two ways Go code
// does it without reqpool: an errgroup per call (no process-wide bound), and
// a global semaphore.Weighted with an errgroup per call (the careful
// hand-written answer). All three bound the process at benchWorkers.
//
//	go test -run '^$' -bench Fanout8 -benchmem -count 6 | benchstat -
const (
	benchWorkers = DefaultWorkers
	benchTasks   = 8
)

func noop(context.Context) error { return nil }

func BenchmarkFanout8(b *testing.B) {
	fns := make([]func(context.Context) error, benchTasks)
	qs := make([]Query, benchTasks)
	for i := range fns {
		fns[i] = noop
		qs[i] = Func(noop)
	}

	p, err := New(Config{Workers: benchWorkers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	// An adaptive pool times every query for its limit: Config.Adaptive's
	// cost (no-op queries never move it, so it stays at Workers).
	adaptive, err := New(Config{Workers: benchWorkers, Adaptive: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { adaptive.Shutdown(context.Background()) })
	reqpoolFanout := func(ctx context.Context) func() error {
		return func() error { return Fanout(ctx, qs...) }
	}
	errgroupFanout := func(ctx context.Context) func() error {
		return func() error {
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(benchTasks)
			for _, fn := range fns {
				g.Go(func() error { return fn(gctx) })
			}
			return g.Wait()
		}
	}
	sem := semaphore.NewWeighted(benchWorkers)
	semaphoreFanout := func(ctx context.Context) func() error {
		return func() error {
			g, gctx := errgroup.WithContext(ctx)
			for _, fn := range fns {
				g.Go(func() error {
					if err := sem.Acquire(gctx, 1); err != nil {
						return err
					}
					defer sem.Release(1)
					return fn(gctx)
				})
			}
			return g.Wait()
		}
	}

	for _, c := range []struct {
		name   string
		fanout func(ctx context.Context) func() error
		pool   *Pool // whose handles the contexts carry
	}{
		{"impl=reqpool", reqpoolFanout, p},
		{"impl=reqpool-adaptive", reqpoolFanout, adaptive},
		{"impl=errgroup", errgroupFanout, p},
		{"impl=semaphore", semaphoreFanout, p},
	} {
		b.Run(c.name+"/mode=serial", func(b *testing.B) {
			ctx, release := c.pool.NewContext(context.Background())
			defer release()
			run := c.fanout(ctx)
			b.ReportAllocs()
			for b.Loop() {
				if err := run(); err != nil {
					b.Fatal(err)
				}
			}
			reportPerTask(b)
		})
		b.Run(c.name+"/mode=parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx, release := c.pool.NewContext(context.Background()) // one request per goroutine
				defer release()
				run := c.fanout(ctx)
				for pb.Next() {
					if err := run(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportPerTask(b)
		})
	}
}

func reportPerTask(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchTasks), "ns/task")
}

// BenchmarkRequest is the per-request cost: impl=bare is a handler alone;
// impl=middleware the same handler behind Middleware, for a request that
// never fans out (what every request pays); and handle+fanout8 a new handle
// per request (as Middleware makes one) with a Fanout of 8 no-op queries,
// next to a global semaphore with an errgroup per request, and in a named
// flow of a pool with two classes (impl=reqpool-classes; serially, the
// flow is made and forgotten by every request, its worst case). The benchmarks
// module runs the same with chi's middleware.RequestID as the anchor of the
// first (chi stays out of this module).
func BenchmarkRequest(b *testing.B) {
	p, err := New(Config{Workers: benchWorkers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	// The same with two classes, every request in a named flow of one of
	// them: what classes and flows add (issue 10 allows 1.2×).
	pc, err := New(Config{Workers: benchWorkers, Classes: []Class{{Name: "interactive", Share: 4}, {Name: "batch"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Shutdown(context.Background()) })
	qs := make([]Query, benchTasks)
	for i := range qs {
		qs[i] = Func(noop)
	}
	sem := semaphore.NewWeighted(benchWorkers)

	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	serveEach := func(h http.Handler) func(*testing.B) {
		return func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					clear(w.h)
					h.ServeHTTP(w, req)
				}
			})
		}
	}
	b.Run("impl=bare", serveEach(bare))
	b.Run("impl=middleware", serveEach(Middleware(p)(bare)))
	// What doc.go quotes for a new request with a Fanout of 8: through
	// Middleware, as a service runs it.
	b.Run("impl=middleware+fanout8", serveEach(Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Fanout(r.Context(), qs...); err != nil {
			b.Error(err)
		}
	}))))

	perRequest := []struct {
		name string
		run  func() error
	}{
		{"impl=reqpool", func() error {
			ctx, h := p.newHandle(context.Background(), "bench")
			defer h.release()
			return Fanout(ctx, qs...)
		}},
		{"impl=reqpool-classes", func() error {
			ctx, h := pc.newHandle(context.Background(), "bench")
			defer h.release()
			h.route("batch", "tenant-1")
			return Fanout(ctx, qs...)
		}},
		{"impl=semaphore", func() error {
			g, gctx := errgroup.WithContext(context.Background())
			for range benchTasks {
				g.Go(func() error {
					if err := sem.Acquire(gctx, 1); err != nil {
						return err
					}
					defer sem.Release(1)
					return noop(gctx)
				})
			}
			return g.Wait()
		}},
	}
	for _, c := range perRequest {
		b.Run("handle+fanout8/"+c.name+"/mode=serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("handle+fanout8/"+c.name+"/mode=parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.run(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// discardWriter is an http.ResponseWriter that keeps nothing but headers.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkObserve is the cost of observing: a Fanout of 8 no-op queries
// with no Observer attached, and with one that does nothing.
func BenchmarkObserve(b *testing.B) {
	p, err := New(Config{Workers: benchWorkers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	qs := repeat(benchTasks, Func(noop))
	run := func(b *testing.B) {
		ctx, release := p.NewContext(context.Background())
		defer release()
		b.ReportAllocs()
		for b.Loop() {
			if err := Fanout(ctx, qs...); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("observers=0", run)
	detach := p.Observe(nopObserver{})
	defer detach()
	b.Run("observers=1", run)
}

type nopObserver struct{}

func (nopObserver) QueryDone(context.Context, QueryRecord) {}
func (nopObserver) Refused(context.Context, Refusal)       {}
