package reqprom_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/reqprom"
)

// Register the pool's collector, fan out, and read what a scrape would
// show. A server would serve reg with
// http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})),
// or register with prometheus.MustRegister and serve promhttp.Handler().
//
// The pool has two classes, and each class has its series: the request
// here is of class batch (as Config.Classify would put it), whose flow,
// tenant-7, is no label. A pool without Classes has class="" instead.
func Example() {
	pool, err := reqpool.New(reqpool.Config{
		Workers: 4,
		Classes: []reqpool.Class{{Name: "interactive", Share: 3}, {Name: "batch"}},
	})
	if err != nil {
		panic(err)
	}
	defer pool.Shutdown(context.Background())

	reg := prometheus.NewRegistry()
	reg.MustRegister(reqprom.NewCollector(pool))

	ctx, release, err := pool.NewClassContext(context.Background(), "batch", "tenant-7")
	if err != nil {
		panic(err)
	}
	noop := reqpool.Func(func(context.Context) error { return nil })
	if err := reqpool.Fanout(ctx, noop, noop, noop); err != nil {
		panic(err)
	}
	release()

	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range families {
		switch mf.GetName() {
		case "reqpool_workers", "reqpool_queries_queued", "reqpool_queries_total", "reqpool_queue_wait_seconds":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			fmt.Printf("%s %s{%s} ", mf.GetType(), mf.GetName(), strings.Join(labels, ","))
			switch {
			case m.Counter != nil:
				fmt.Println(m.GetCounter().GetValue())
			case m.Gauge != nil:
				fmt.Println(m.GetGauge().GetValue())
			case m.Histogram != nil:
				fmt.Println("count", m.GetHistogram().GetSampleCount())
			}
		}
	}
	// Output:
	// GAUGE reqpool_queries_queued{class="batch"} 0
	// GAUGE reqpool_queries_queued{class="interactive"} 0
	// COUNTER reqpool_queries_total{class="batch",outcome="cancelled"} 0
	// COUNTER reqpool_queries_total{class="batch",outcome="dropped"} 0
	// COUNTER reqpool_queries_total{class="batch",outcome="error"} 0
	// COUNTER reqpool_queries_total{class="batch",outcome="ok"} 3
	// COUNTER reqpool_queries_total{class="batch",outcome="panic"} 0
	// COUNTER reqpool_queries_total{class="interactive",outcome="cancelled"} 0
	// COUNTER reqpool_queries_total{class="interactive",outcome="dropped"} 0
	// COUNTER reqpool_queries_total{class="interactive",outcome="error"} 0
	// COUNTER reqpool_queries_total{class="interactive",outcome="ok"} 0
	// COUNTER reqpool_queries_total{class="interactive",outcome="panic"} 0
	// HISTOGRAM reqpool_queue_wait_seconds{class="batch"} count 3
	// HISTOGRAM reqpool_queue_wait_seconds{class="interactive"} count 0
	// GAUGE reqpool_workers{} 4
}
