package reqprom_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/reqprom"
)

// BenchmarkCollector is what the collector costs a Fanout of 8 no-op queries
// on a reused handle, serial, as the root module's BenchmarkObserve, on a
// pool without Classes:
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
func BenchmarkCollector(b *testing.B) { benchCollector(b, reqpool.Config{}, "") }

// BenchmarkCollectorClasses is BenchmarkCollector on a pool of four
// classes, for a request of the last, which the collector finds last
// (comparing names of the same length, its worst case).
func BenchmarkCollectorClasses(b *testing.B) {
	benchCollector(b, reqpool.Config{Classes: fourClasses}, "class-4")
}

// fourClasses are the classes of the benchmarks' pools with classes.
var fourClasses = []reqpool.Class{{Name: "class-1"}, {Name: "class-2"}, {Name: "class-3"}, {Name: "class-4"}}

func benchCollector(b *testing.B, cfg reqpool.Config, class string) {
	cfg.Workers = reqpool.DefaultWorkers
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
		{"client_golang", func(p *reqpool.Pool) { p.Observe(newPromObserver(p)) }},
	} {
		b.Run("attached="+c.name, func(b *testing.B) {
			p, err := reqpool.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			c.attach(p)
			ctx, release, err := p.NewClassContext(context.Background(), class, "")
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
		})
	}
}

type nopObserver struct{}

func (nopObserver) QueryDone(context.Context, reqpool.QueryRecord) {}
func (nopObserver) Refused(context.Context, reqpool.Refusal)       {}

// promObserver keeps the collector's counters and histograms in
// client_golang's own types, with the label children of each class resolved
// up front and found as reqprom finds its own: the obvious implementation,
// which reqprom's atomics replace.
type promObserver struct{ classes []*promClass }

type promClass struct {
	name      string
	outcomes  [4]prometheus.Counter
	reasons   [3]prometheus.Counter
	wait, run prometheus.Observer
}

func newPromObserver(p *reqpool.Pool) *promObserver {
	queries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqpool_queries_total", Help: "h"}, []string{"class", "outcome"})
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqpool_rejected_total", Help: "h"}, []string{"class", "reason"})
	buckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "reqpool_queue_wait_seconds", Help: "h", Buckets: buckets}, []string{"class"})
	run := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "reqpool_query_duration_seconds", Help: "h", Buckets: buckets}, []string{"class"})
	o := &promObserver{}
	for _, st := range p.Stats().Classes {
		k := &promClass{name: st.Name, wait: wait.WithLabelValues(st.Name), run: run.WithLabelValues(st.Name)}
		for i := range k.outcomes {
			k.outcomes[i] = queries.WithLabelValues(st.Name, reqpool.Outcome(i).String())
		}
		for i := range k.reasons {
			k.reasons[i] = rejected.WithLabelValues(st.Name, reqpool.RefusalReason(i).String())
		}
		o.classes = append(o.classes, k)
	}
	return o
}

func (o *promObserver) class(name string) *promClass {
	for _, k := range o.classes {
		if k.name == name {
			return k
		}
	}
	return o.classes[0]
}

func (o *promObserver) QueryDone(_ context.Context, rec reqpool.QueryRecord) {
	k := o.class(rec.Class)
	k.outcomes[rec.Outcome].Inc()
	k.wait.Observe(rec.Wait().Seconds())
	if !rec.Started.IsZero() {
		k.run.Observe(rec.Run().Seconds())
	}
}

func (o *promObserver) Refused(_ context.Context, ref reqpool.Refusal) {
	o.class(ref.Class).reasons[ref.Reason].Inc()
}

// BenchmarkQueryDone is the collector's own cost per query, without the
// pool's: QueryDone called directly with a query that waited 50 µs and
// ran 1 ms, of a pool without Classes (class="") and of the last of four
// classes, as in BenchmarkCollectorClasses.
func BenchmarkQueryDone(b *testing.B) {
	for _, c := range []struct {
		name    string
		classes []reqpool.Class
		class   string
	}{
		{"classes=0", nil, ""},
		{"classes=4", fourClasses, "class-4"},
	} {
		b.Run(c.name, func(b *testing.B) {
			p, err := reqpool.New(reqpool.Config{Classes: c.classes})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(context.Background())
			o := reqprom.NewCollector(p).(reqpool.Observer)
			t0 := time.Now()
			rec := reqpool.QueryRecord{Class: c.class, Admitted: t0, Started: t0.Add(50 * time.Microsecond),
				Finished: t0.Add(time.Millisecond + 50*time.Microsecond)}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				o.QueryDone(ctx, rec)
			}
		})
	}
}
