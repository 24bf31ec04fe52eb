package reqotel

import (
	"context"
	"testing"

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
func BenchmarkObserver(b *testing.B) {
	p, err := reqpool.New(reqpool.Config{Workers: reqpool.DefaultWorkers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	qs := make([]reqpool.Query, 8)
	for i := range qs {
		qs[i] = reqpool.Func(func(context.Context) error { return nil })
	}
	run := func(b *testing.B, ctx context.Context) {
		ctx, release := p.NewContext(ctx)
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
