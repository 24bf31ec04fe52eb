package reqprom_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/reqprom"
)

// BenchmarkCollector is what the collector costs a Fanout of 8 no-op queries
// on a reused handle, serial, as the root module's BenchmarkObserve:
//
//   - attached=none: no Observer, the core's own cost;
//   - attached=nop: an Observer that does nothing, which adds what reqpool
//     pays for any Observer (a clock read per query and one per Fanout, and
//     the calls);
//   - attached=reqprom: NewCollector's;
//   - attached=client_golang: the same metrics kept in client_golang's own
//     CounterVec children and Histograms, for comparison (not exported).
//
// The machine is noisy: interleave repetitions and compare medians, e.g.
//
//	go test -c -o /tmp/reqprom.test
//	for i in 1 2 3 4 5 6; do /tmp/reqprom.test -test.run '^$' -test.bench Collector -test.count 1; done
func BenchmarkCollector(b *testing.B) {
	qs := make([]reqpool.Query, 8)
	for i := range qs {
		qs[i] = reqpool.Func(func(context.Context) error { return nil })
	}
	for _, c := range []struct {
		name   string
		attach func(*reqpool.Pool)
	}{
		{"none", func(*reqpool.Pool) {}},
		{"nop", func(p *reqpool.Pool) { p.Observe(nopObserver{}) }},
		{"reqprom", func(p *reqpool.Pool) { reqprom.NewCollector(p) }},
		{"client_golang", func(p *reqpool.Pool) { p.Observe(newPromObserver()) }},
	} {
		b.Run("attached="+c.name, func(b *testing.B) {
			p, err := reqpool.New(reqpool.Config{Workers: reqpool.DefaultWorkers})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			c.attach(p)
			ctx, release := p.NewContext(context.Background())
			defer release()
			b.ReportAllocs()
			for b.Loop() {
				if err := reqpool.Fanout(ctx, qs...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type nopObserver struct{}

func (nopObserver) QueryDone(context.Context, reqpool.QueryRecord) {}
func (nopObserver) Refused(context.Context, reqpool.Refusal)       {}

// promObserver keeps the collector's counters and histograms in
// client_golang's own types, with the label children resolved up front:
// the obvious implementation, which reqprom's atomics replace.
type promObserver struct {
	outcomes  [4]prometheus.Counter
	reasons   [3]prometheus.Counter
	wait, run prometheus.Histogram
}

func newPromObserver() *promObserver {
	queries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqpool_queries_total", Help: "h"}, []string{"outcome"})
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqpool_rejected_total", Help: "h"}, []string{"reason"})
	buckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	o := &promObserver{
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reqpool_queue_wait_seconds", Help: "h", Buckets: buckets}),
		run:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reqpool_query_duration_seconds", Help: "h", Buckets: buckets}),
	}
	for i := range o.outcomes {
		o.outcomes[i] = queries.WithLabelValues(reqpool.Outcome(i).String())
	}
	for i := range o.reasons {
		o.reasons[i] = rejected.WithLabelValues(reqpool.RefusalReason(i).String())
	}
	return o
}

func (o *promObserver) QueryDone(_ context.Context, rec reqpool.QueryRecord) {
	o.outcomes[rec.Outcome].Inc()
	o.wait.Observe(rec.Wait().Seconds())
	if !rec.Started.IsZero() {
		o.run.Observe(rec.Run().Seconds())
	}
}

func (o *promObserver) Refused(_ context.Context, ref reqpool.Refusal) { o.reasons[ref.Reason].Inc() }
