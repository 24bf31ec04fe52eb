package reqprom_test

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/reqprom"
)

// Register the pool's collector, fan out, and read what a scrape would
// show. A server would serve reg with
// http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})),
// or register with prometheus.MustRegister and serve promhttp.Handler().
func Example() {
	pool, err := reqpool.New(reqpool.Config{Workers: 4})
	if err != nil {
		panic(err)
	}
	defer pool.Shutdown(context.Background())

	reg := prometheus.NewRegistry()
	reg.MustRegister(reqprom.NewCollector(pool))

	ctx, release := pool.NewContext(context.Background())
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
		fmt.Print(mf.GetName(), " ", mf.GetType())
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				fmt.Printf(" %s=%v", l.GetValue(), m.GetCounter().GetValue())
			}
			if h := m.GetHistogram(); h != nil {
				fmt.Printf(" count=%d", h.GetSampleCount())
			}
			if g := m.GetGauge(); g != nil {
				fmt.Printf(" %v", g.GetValue())
			}
		}
		fmt.Println()
	}
	// Output:
	// reqpool_queries_queued GAUGE 0
	// reqpool_queries_running GAUGE 0
	// reqpool_queries_total COUNTER dropped=0 error=0 ok=3 panic=0
	// reqpool_query_duration_seconds HISTOGRAM count=3
	// reqpool_queue_wait_seconds HISTOGRAM count=3
	// reqpool_rejected_total COUNTER closed=0 queue_full=0 too_many=0
	// reqpool_requests_active GAUGE 0
	// reqpool_workers GAUGE 4
}
