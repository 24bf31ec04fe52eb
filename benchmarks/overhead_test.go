package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/reqotel"
	"github.com/reqpool/reqpool/reqprom"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Scenario 1 of the suite runs the benchmarks of this file as a subprocess
// (overheadBenchRE) and summarises them; by hand:
//
//	go test -run '^$' -bench 'Overhead|Request|Observe|Clock' -benchmem -count 6 > /tmp/o.txt
//	go tool benchstat -filter .name:Overhead -col /impl /tmp/o.txt

func noopTask(context.Context) error { return nil }

// noopTasks returns n no-op tasks.
func noopTasks(n int) []Task {
	tasks := make([]Task, n)
	for i := range tasks {
		tasks[i] = noopTask
	}
	return tasks
}

// BenchmarkOverhead measures what each contender adds to a Fanout of no-op
// tasks: the cost of scheduling, not of work. Serial mode calls Fanout from
// one goroutine; parallel mode from GOMAXPROCS goroutines at once, each its
// own request, all on one pool. Each goroutine's request lasts the whole
// loop, as a handler that fans out repeatedly would: the per-request setup
// (reqpool's handle) is BenchmarkRequest's.
func BenchmarkOverhead(b *testing.B) {
	for _, f := range contenders {
		for _, n := range overheadSizes {
			for _, mode := range overheadModes {
				b.Run(overheadSub(f.Name, n, mode), func(b *testing.B) {
					c := newContender(b, f)
					loop(b, mode == "parallel", fanoutOp(c, context.Background(), noopTasks(n)))
				})
			}
		}
	}
}

// BenchmarkRequest is the per-request cost, each iteration one request
// served by a handler (no server, no network: a reused *http.Request and a
// ResponseWriter that discards):
//
//   - fanout=0: a request that never fans out, which every request of a
//     server pays: a bare handler, the same behind reqpool.Middleware, and
//     behind chi's middleware.RequestID (requestAnchors);
//   - fanout=8: a handler that runs a Fanout of 8 no-op tasks per request,
//     behind each contender's Wrap: for reqpool, Middleware makes a new
//     handle per request and the handler calls reqpool.Fanout(r.Context(),
//     ...), so the handle's registration with the scheduler and its release
//     are in every iteration; the others have no per-request state of
//     their own.
func BenchmarkRequest(b *testing.B) {
	bare := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, impl := range requestAnchors {
		for _, mode := range overheadModes {
			b.Run(requestSub(0, impl, mode), func(b *testing.B) {
				var h http.Handler
				switch impl {
				case "bare":
					h = bare
				case "reqpool":
					h = newContender(b, Factory{"reqpool", newReqpool}).Wrap(bare)
				case "chi":
					h = middleware.RequestID(bare)
				default:
					b.Fatalf("no handler for %q", impl)
				}
				loop(b, mode == "parallel", serveOp(h))
			})
		}
	}
	for _, f := range contenders {
		for _, mode := range overheadModes {
			b.Run(requestSub(requestFanout, f.Name, mode), func(b *testing.B) {
				c := newContender(b, f)
				tasks := noopTasks(requestFanout)
				h := c.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if err := c.Fanout(r.Context(), tasks); err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
					}
				}))
				loop(b, mode == "parallel", serveOp(h))
			})
		}
	}
}

// BenchmarkObserve is what an Observer costs a serial Fanout of 8 no-op
// tasks on a reused handle, the cell "8, serial" of BenchmarkOverhead, with
// each of observeCases attached to the pool (see attachers).
func BenchmarkObserve(b *testing.B) {
	for _, oc := range observeCases {
		b.Run(observeSub(oc.Name), func(b *testing.B) {
			attach, ok := attachers[oc.Name]
			if !ok {
				b.Fatalf("no attacher for %q", oc.Name)
			}
			c := newContender(b, Factory{"reqpool", newReqpool})
			base := attach(b, c.(*reqpoolContender).pool)
			loop(b, false, fanoutOp(c, base, noopTasks(observeTasks)))
		})
	}
}

// attachers attach each of observeCases to a pool, undo it in b's cleanup,
// and return the context a request starts from.
var attachers = map[string]func(b *testing.B, p *reqpool.Pool) context.Context{
	"none": func(*testing.B, *reqpool.Pool) context.Context { return context.Background() },
	"nop": func(b *testing.B, p *reqpool.Pool) context.Context {
		b.Cleanup(p.Observe(nopObserver{}))
		return context.Background()
	},
	// The collector cannot be detached: the pool is the sub-benchmark's own.
	"reqprom": func(_ *testing.B, p *reqpool.Pool) context.Context {
		reqprom.NewCollector(p)
		return context.Background()
	},
	// No SDK is installed in this process: the global providers are
	// OpenTelemetry's no-op defaults.
	"reqotel-global": func(b *testing.B, p *reqpool.Pool) context.Context {
		observeOtel(b, p)
		return context.Background()
	},
	// The SDK samples every span, each a child of a sampled request span
	// as otelhttp's would be, batched to an exporter that discards them;
	// the metrics are aggregated for a reader that never reads them.
	"reqotel-sdk": func(b *testing.B, p *reqpool.Pool) context.Context {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(discardSpans{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { // after the detach, which observeOtel registers later
			if err := errors.Join(tp.Shutdown(context.Background()), mp.Shutdown(context.Background())); err != nil {
				b.Error(err)
			}
		})
		observeOtel(b, p, reqotel.WithTracerProvider(tp), reqotel.WithMeterProvider(mp))
		ctx, span := tp.Tracer("request").Start(context.Background(), "GET /")
		b.Cleanup(func() { span.End() })
		return ctx
	},
}

func observeOtel(b *testing.B, p *reqpool.Pool, opts ...reqotel.Option) {
	detach, err := reqotel.Observe(p, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(detach)
}

// BenchmarkClock is one read of the monotonic clock, as reqpool's core
// makes for an Observer: once per observed query and once per Fanout.
func BenchmarkClock(b *testing.B) {
	epoch := time.Now()
	for b.Loop() {
		clockSink = epoch.Add(time.Since(epoch))
	}
}

var clockSink time.Time

// newContender builds f's contender on a pool of overheadWorkers and closes
// it when b ends, after the timer has stopped.
func newContender(b *testing.B, f Factory) Contender {
	c, err := f.New(PoolConfig{Workers: overheadWorkers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}

// loop runs op b.N times: from one goroutine, or from GOMAXPROCS goroutines
// when parallel. Each goroutine gets its op from newOp, untimed when serial,
// and calls the done that comes with it at its end.
func loop(b *testing.B, parallel bool, newOp func() (op func() error, done func())) {
	b.ReportAllocs()
	if !parallel {
		op, done := newOp()
		defer done()
		for b.Loop() {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		op, done := newOp()
		defer done()
		for pb.Next() {
			if err := op(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// fanoutOp makes ops that run a Fanout of tasks on c, each goroutine as one
// request of c's that starts from base and lasts until the loop ends.
func fanoutOp(c Contender, base context.Context, tasks []Task) func() (func() error, func()) {
	return func() (func() error, func()) {
		ctx, release := c.Request(base)
		return func() error { return c.Fanout(ctx, tasks) }, release
	}
}

// serveOp makes ops that serve one request with h, each goroutine with a
// request and a ResponseWriter of its own, reused; a status of 500 or more
// fails the benchmark.
func serveOp(h http.Handler) func() (func() error, func()) {
	return func() (func() error, func()) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		w := &discardWriter{h: http.Header{}}
		return func() error {
			clear(w.h)
			w.code = 0
			h.ServeHTTP(w, req)
			if w.code >= http.StatusInternalServerError {
				return fmt.Errorf("status %d", w.code)
			}
			return nil
		}, func() {}
	}
}

// discardWriter is an http.ResponseWriter that keeps the headers and the
// status, and discards the body.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// nopObserver is a reqpool.Observer that does nothing: what reqpool itself
// pays for any Observer.
type nopObserver struct{}

func (nopObserver) QueryDone(context.Context, reqpool.QueryRecord) {}
func (nopObserver) Refused(context.Context, reqpool.Refusal)       {}

// discardSpans is a span exporter that drops what it is given.
type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }
