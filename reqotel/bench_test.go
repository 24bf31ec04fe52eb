package reqotel

import (
	"context"
	"testing"
	"time"

	"github.com/reqpool/reqpool"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BenchmarkObserver is the cost of reqotel on a Fanout of 8 no-op queries
// on a reused handle, as reqpool's BenchmarkObserve measures observers.
// "none" has nothing attached. "global" has Observe with the global
// providers and no SDK installed (when run with -run '^$'; after
// TestGlobalProviders the globals are no-op providers, which cost about the
// same). "sdk" has the SDK sampling every span, each a child of a sampled
// request span as otelhttp's would be, batched to an exporter that discards
// them, and the metrics aggregated for a reader that never reads them.
// "sdk-unsampled" has the same SDK for requests that are not sampled
// (ParentBased(NeverSample) and no parent): spans are not recorded, metrics
// are.
//
//	go test -run '^$' -bench Observer -benchmem -count 6 | benchstat -
func BenchmarkObserver(b *testing.B) { benchObserver(b, reqpool.Config{}, "", "") }

// BenchmarkObserverClasses is BenchmarkObserver on a pool of four classes,
// for a request of the last, which the observer finds last, in a flow.
func BenchmarkObserverClasses(b *testing.B) {
	cfg := reqpool.Config{Classes: []reqpool.Class{{Name: "class-1"}, {Name: "class-2"}, {Name: "class-3"}, {Name: "class-4"}}}
	benchObserver(b, cfg, "class-4", "tenant-1")
}

func benchObserver(b *testing.B, cfg reqpool.Config, class, flow string) {
	cfg.Workers = reqpool.DefaultWorkers
	p, err := reqpool.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	qs := make([]reqpool.Query, 8)
	for i := range qs {
		qs[i] = reqpool.Func(func(context.Context) error { return nil })
	}
	run := func(b *testing.B, ctx context.Context) {
		ctx, release, err := p.NewClassContext(ctx, class, flow)
		if err != nil {
			b.Fatal(err)
		}
		defer release()
		b.ReportAllocs()
		for b.Loop() {
			if err := reqpool.Fanout(ctx, qs...); err != nil {
				b.Fatal(err)
			}
		}
	}
	observe := func(b *testing.B, opts ...Option) {
		detach, err := Observe(p, opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(detach)
	}
	sdk := func(b *testing.B, sampler sdktrace.Sampler) (*sdktrace.TracerProvider, []Option) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(discard{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() {
			tp.Shutdown(context.Background())
			mp.Shutdown(context.Background())
		})
		return tp, []Option{WithTracerProvider(tp), WithMeterProvider(mp)}
	}

	b.Run("none", func(b *testing.B) { run(b, context.Background()) })
	b.Run("global", func(b *testing.B) {
		observe(b)
		run(b, context.Background())
	})
	b.Run("sdk", func(b *testing.B) {
		tp, opts := sdk(b, sdktrace.AlwaysSample())
		observe(b, opts...)
		ctx, span := tp.Tracer("request").Start(context.Background(), "GET /")
		defer span.End()
		run(b, ctx)
	})
	b.Run("sdk-unsampled", func(b *testing.B) {
		_, opts := sdk(b, sdktrace.ParentBased(sdktrace.NeverSample()))
		observe(b, opts...)
		run(b, context.Background())
	})
}

// discard is a span exporter that drops what it is given.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkQueryDone is the observer's own cost per query with the SDK,
// for a request that is not sampled (the metrics alone), without the
// pool's: QueryDone called directly, of a pool without Classes and of the
// last of four classes, as in BenchmarkObserverClasses.
func BenchmarkQueryDone(b *testing.B) {
	for _, c := range []struct {
		name    string
		classes []string
		class   string
	}{
		{"classes=0", nil, ""},
		{"classes=4", []string{"class-1", "class-2", "class-3", "class-4"}, "class-4"},
	} {
		b.Run(c.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() {
				tp.Shutdown(context.Background())
				mp.Shutdown(context.Background())
			})
			o, err := newObserver(c.classes, WithTracerProvider(tp), WithMeterProvider(mp))
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			rec := reqpool.QueryRecord{RequestID: "r", Class: c.class, Flow: "tenant-1", Admitted: t0,
				Started: t0.Add(50 * time.Microsecond), Finished: t0.Add(time.Millisecond + 50*time.Microsecond)}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				o.QueryDone(ctx, rec)
			}
		})
	}
}
