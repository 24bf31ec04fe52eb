// Package reqprom exports the metrics of a reqpool.Pool to Prometheus.
//
//	pool, err := reqpool.New(reqpool.Config{Workers: 16})
//	...
//	prometheus.MustRegister(reqprom.NewCollector(pool))
//	http.Handle("/metrics", promhttp.Handler())
//
// NewCollector's Collector exports, in Prometheus' base units:
//
//	reqpool_workers                        gauge      Config.Workers
//	reqpool_limit                          gauge      the most queries that execute at once now: Workers, or fewer in a connection shortage (Stats.Limit)
//	reqpool_queries_running{class}         gauge      queries executing now
//	reqpool_queries_queued{class}          gauge      queries admitted and waiting to start
//	reqpool_flows_active{class}            gauge      named flows with a request registered or a query executing
//	reqpool_requests_active                gauge      requests (handles) that have fanned out and are not yet released
//	reqpool_queries_total{class,outcome}   counter    queries that ended, by outcome: ok, error, panic, cancelled or dropped
//	reqpool_rejected_total{class,reason}   counter    Fanout calls refused as a whole, by reason: queue_full, too_many or closed
//	reqpool_queue_wait_seconds{class}      histogram  how long each query waited in the queue
//	reqpool_query_duration_seconds{class}  histogram  how long each query that started ran
//
// The gauges are read from Pool.Stats when Prometheus scrapes; the counters
// and histograms are kept by a reqpool.Observer that NewCollector attaches
// to the pool, and so count from NewCollector on, not from reqpool.New.
//
// # Classes
//
// The class label is the priority class (reqpool.Class.Name) of the
// query's request, or of the refused Fanout's: one series per class of
// Config.Classes, every one exported from the start. The pool's own figures
// are the sums over the classes, as in Stats: for example
// sum without (class) (reqpool_queries_running). reqpool_workers, reqpool_limit and
// reqpool_requests_active are the pool's alone, without a class.
//
// A pool without Classes has one class, named "", and its series have
// class="". The label is there whatever the configuration, so that every
// series of a metric has the same label names, as client_golang requires
// of the Collectors of one registry (two pools, one with classes and one
// without, registered through WrapRegistererWith). Prometheus stores a
// label with an empty value as no label at all: a pool without Classes has
// the same series as before classes existed, and {class=""} selects them.
//
// The flow that Config.Classify names is never a label: its values (a
// tenant, a user) are unbounded. reqpool_flows_active counts a class's
// flows instead.
//
// # Outcomes
//
// A query that panicked (or called runtime.Goexit) is counted with
// outcome="panic", not as an error: an error is usually the database's
// answer, a panic a bug in the application, and the two call for different
// alerts. outcome="error" counts the queries that failed on their own (an
// error returned while their Fanout's context was live), and
// outcome="cancelled" those that returned an error once it had ended (the
// client hung up, a deadline passed, a sibling failed), as Stats.Failed
// (with the panics) and Stats.Cancelled count them: a 404's cancelled
// siblings are no failure to alert on. A query that never started
// (its request's context ended, a sibling failed, or Shutdown ran out of
// time) is counted with outcome="dropped". Every label value of both
// counters is exported from the start, at 0, so that rate() and alerts see
// a series before its first event.
//
// # Buckets
//
// Both histograms have the same buckets: 100 µs to 10 s in steps of
// about 2.5× (1, 2.5, 5 per decade). A query of an OLTP database takes from
// a few hundred microseconds (an indexed lookup on a warm cache) to a few
// hundred milliseconds, and a statement_timeout usually cuts it off within
// seconds. The queue wait of a pool with free workers is near zero (the
// first bucket), and that of a loaded pool up to about QueueSize/Workers
// query times, when the queue is full.
// Past 10 s only the +Inf bucket counts.
//
// The queue wait of a dropped query is the time from its Fanout's admission
// to its drop, a lower bound of what it would have waited: it is observed
// too, so that an overloaded pool whose requests give up while queued shows
// long waits rather than only the short waits of the queries that got to
// run. reqpool_queue_wait_seconds_count is thus the sum of
// reqpool_queries_total, and reqpool_query_duration_seconds_count its sum
// without the dropped queries.
//
// # Cost
//
// The Observer finds the query's class among the pool's (a scan of a few
// names), makes three atomic additions and allocates nothing; Collect
// calls Pool.Stats once, which takes the pool's lock briefly, and is safe
// for concurrent scrapes. On the project's 2-core machine (medians of 8 to
// 10 interleaved runs, under other load), QueryDone itself
// (BenchmarkQueryDone) takes 24.5 ns a query on a pool without Classes, as
// before the class label, and 26.6 ns for the last of four classes whose
// names have the same length, its worst case. A serial Fanout of 8 no-op
// queries (BenchmarkCollector) costs 745 ns with nothing attached,
// 1,340 ns with an Observer that does nothing and 1,630 ns with the
// collector: 1.22× the do-nothing Observer (1,670 ns and 1.23× with four
// classes, BenchmarkCollectorClasses). The rest of the difference to no
// Observer at all is reqpool's own, for any Observer: mostly one clock read
// per query. client_golang's own Histograms and counters, label children
// resolved up front, cost 2,080 ns (1.56× the do-nothing Observer).
package reqprom

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/reqpool/reqpool"
)

// bucketBounds are the upper bounds of the buckets of both histograms; see
// the package doc.
var bucketBounds = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	1 * time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	1 * time.Second, 2500 * time.Millisecond, 5 * time.Second,
	10 * time.Second,
}

const nBuckets = len(bucketBounds)

// NewCollector returns a prometheus.Collector of p's metrics (see the
// package doc), to register with a prometheus.Registerer.
//
// It attaches a reqpool.Observer to p for the rest of p's life: there is
// no detaching it, and each call attaches one more, which every query of p
// then pays for. Make one Collector per pool, at start-up; it is garbage
// with the pool. Counts start at 0 when NewCollector is called.
//
// Its metric names carry no label for the pool, so registering the
// Collectors of two pools in one registry fails with a
// prometheus.AlreadyRegisteredError, as does registering one Collector
// twice. To export several pools, register each through
// prometheus.WrapRegistererWith(prometheus.Labels{"pool": name}, reg).
//
// NewCollector panics if p is nil: a wiring mistake, found at start-up.
// Neither it nor the Collector fails otherwise. Collect takes no lock of
// its own, only the pool's for Pool.Stats, briefly; the collector keeps
// about 10 KB of counters per class of the pool.
func NewCollector(p *reqpool.Pool) prometheus.Collector {
	if p == nil {
		panic("reqprom: NewCollector with a nil *reqpool.Pool")
	}
	class := []string{"class"}
	c := &collector{
		pool: p,
		workers: prometheus.NewDesc("reqpool_workers",
			"The most queries that execute at once (reqpool Config.Workers).", nil, nil),
		limit: prometheus.NewDesc("reqpool_limit",
			"The most queries that execute at once now: reqpool_workers, or fewer while the database refuses new connections for lack of slots (reqpool Stats.Limit).", nil, nil),
		running: prometheus.NewDesc("reqpool_queries_running",
			"Queries executing now, by class.", class, nil),
		queued: prometheus.NewDesc("reqpool_queries_queued",
			"Queries admitted and waiting to start, by class.", class, nil),
		flows: prometheus.NewDesc("reqpool_flows_active",
			"Named flows (reqpool Config.Classify) with a request registered or a query executing, by class.", class, nil),
		requests: prometheus.NewDesc("reqpool_requests_active",
			"Requests (handles) that have fanned out and are not yet released.", nil, nil),
		queries: prometheus.NewDesc("reqpool_queries_total",
			"Queries that ended, by class and outcome: ok, error, panic, cancelled (an error after their Fanout's context ended), or dropped (never started).", []string{"class", "outcome"}, nil),
		rejected: prometheus.NewDesc("reqpool_rejected_total",
			"Fanout calls refused as a whole, by class and reason: queue_full, too_many (above MaxFanout) or closed (after Shutdown).", []string{"class", "reason"}, nil),
		wait: prometheus.NewDesc("reqpool_queue_wait_seconds",
			"How long queries waited in the queue, by class: from their Fanout's admission to their start, or to their drop.", class, nil),
		run: prometheus.NewDesc("reqpool_query_duration_seconds",
			"How long queries ran, for those that started, by class.", class, nil),
	}
	if classes := p.Config().Classes; len(classes) > 0 {
		for _, k := range classes {
			c.classes = append(c.classes, &classCounts{name: k.Name})
		}
	} else {
		c.classes = []*classCounts{{name: ""}} // Stats' one class
	}
	p.Observe(c)
	return c
}

// collector is both the prometheus.Collector and the reqpool.Observer.
//
// The observer side is the hot path: every query pays for QueryDone. It
// takes no lock and allocates nothing; it finds the query's class by name
// among the pool's few, in a slice made by NewCollector, and makes three
// atomic additions in that class's counters. Rather than a counter per outcome and a histogram each
// for the queue wait and the run time (five additions, and more with
// client_golang's Histogram, which BenchmarkCollector compares), one
// counter per cell counts the queries of one outcome whose wait fell in one
// bucket and whose run time in another, and two more sum the waits and run
// times. Collect adds the cells up into the outcome counters and both
// histograms' buckets, all from one pass, so a scrape's outcome counts and
// histogram counts agree with each other exactly. The sums are read just
// after: a scrape during traffic may have a sum that includes a query or two
// its counts do not yet (or the reverse), which no rate() over a scrape
// interval can tell. A sum, in uint64 nanoseconds, wraps after 584 years of
// summed time (5.8 years at a constant 100 queries executing).
type collector struct {
	pool *reqpool.Pool

	workers, limit, running, queued, flows, requests *prometheus.Desc
	queries, rejected                                *prometheus.Desc
	wait, run                                        *prometheus.Desc

	// classes has the counts of each class of the pool, in Stats.Classes'
	// order: one named "" for a pool without Classes. Read-only after
	// NewCollector.
	classes []*classCounts

	// extra has the counts of classes that reqpool reported but the pool's
	// Config did not name, which reqpool does not do: a fallback, so that
	// such a class is counted under its own name rather than under another
	// or not at all. Copied on write under mu, and at most maxExtra long.
	extra atomic.Pointer[[]*classCounts]
	mu    sync.Mutex
}

// maxExtra bounds collector.extra: the queries of any class beyond go
// uncounted rather than adding series without end.
const maxExtra = 16

// classCounts are the counters of one class.
type classCounts struct {
	name string

	// cells[o][w][r]: queries of outcome o whose wait fell in bucket w
	// and run time in bucket r, or r == notRun for a query that never
	// started. Bucket nBuckets is +Inf.
	cells   [nOutcomes][nBuckets + 1][nBuckets + 2]atomic.Uint64
	waitSum atomic.Uint64           // nanoseconds
	runSum  atomic.Uint64           // nanoseconds
	reasons [nReasons]atomic.Uint64 // by reqpool.RefusalReason
}

const notRun = nBuckets + 1

// The number of reqpool.Outcome and reqpool.RefusalReason values;
// TestLabelValues checks them against their String methods.
const (
	nOutcomes = int(reqpool.OutcomeCancelled) + 1
	nReasons  = int(reqpool.RefusedClosed) + 1
)

// class returns the counts of the class named name, or nil if there are
// already maxExtra classes beyond the pool's and name is not one of them.
func (c *collector) class(name string) *classCounts {
	for _, k := range c.classes {
		if k.name == name {
			return k
		}
	}
	return c.extraClass(name)
}

// extraClass returns the counts of a class that the pool's Config does not
// name, adding it if there is room.
func (c *collector) extraClass(name string) *classCounts {
	if p := c.extra.Load(); p != nil {
		for _, k := range *p {
			if k.name == name {
				return k
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var cur []*classCounts
	if p := c.extra.Load(); p != nil {
		cur = *p
	}
	for _, k := range cur {
		if k.name == name {
			return k
		}
	}
	if len(cur) >= maxExtra {
		return nil
	}
	k := &classCounts{name: name}
	next := append(cur[:len(cur):len(cur)], k)
	c.extra.Store(&next)
	return k
}

// QueryDone counts a query by its class, its outcome, its queue wait and,
// if it started, its run time. A query whose outcome reqpool did not have
// when this was written goes uncounted rather than panicking on the query's
// goroutine (TestLabelValues fails first).
func (c *collector) QueryDone(_ context.Context, rec reqpool.QueryRecord) {
	if int(rec.Outcome) >= nOutcomes {
		return
	}
	k := c.class(rec.Class)
	if k == nil {
		return
	}
	w := nanos(rec.Wait())
	k.waitSum.Add(w)
	if rec.Started.IsZero() { // dropped: it never ran
		k.cells[rec.Outcome][bucket(w)][notRun].Add(1)
		return
	}
	r := nanos(rec.Run())
	k.cells[rec.Outcome][bucket(w)][bucket(r)].Add(1)
	k.runSum.Add(r)
}

// nanos returns d in nanoseconds, counting a negative d, which reqpool does
// not report, as 0.
func nanos(d time.Duration) uint64 { return uint64(max(d, 0)) }

// bucket returns the index of the bucket that n nanoseconds fall in:
// the first bound at or above it, or nBuckets (+Inf).
func bucket(n uint64) int {
	i := 0
	for i < nBuckets && n > uint64(bucketBounds[i]) {
		i++
	}
	return i
}

// Refused counts a refused Fanout by its class and reason.
func (c *collector) Refused(_ context.Context, ref reqpool.Refusal) {
	if int(ref.Reason) >= nReasons {
		return
	}
	if k := c.class(ref.Class); k != nil {
		k.reasons[ref.Reason].Add(1)
	}
}

// Describe sends the descriptors of all ten metrics.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.workers, c.limit, c.running, c.queued, c.flows, c.requests, c.queries, c.rejected, c.wait, c.run} {
		ch <- d
	}
}

// Collect sends the gauges from one Pool.Stats snapshot, then for each
// class the counters (every label value, zeros included) and the
// histograms.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stats()
	ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(s.Workers))
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(s.Limit))
	ch <- prometheus.MustNewConstMetric(c.requests, prometheus.GaugeValue, float64(s.Requests))
	for _, k := range s.Classes {
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(k.Running), k.Name)
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(k.Queued), k.Name)
		ch <- prometheus.MustNewConstMetric(c.flows, prometheus.GaugeValue, float64(k.Flows), k.Name)
	}
	for _, k := range c.classes {
		c.collectClass(ch, k)
	}
	if p := c.extra.Load(); p != nil {
		for _, k := range *p {
			c.collectClass(ch, k)
		}
	}
}

// collectClass sends the counters and histograms of class k.
func (c *collector) collectClass(ch chan<- prometheus.Metric, k *classCounts) {
	var outcomes [nOutcomes]uint64
	var waits, runs [nBuckets + 1]uint64 // by bucket, not cumulative
	for o := range k.cells {
		for w := range k.cells[o] {
			for r := range k.cells[o][w] {
				n := k.cells[o][w][r].Load()
				outcomes[o] += n
				waits[w] += n
				if r != notRun {
					runs[r] += n
				}
			}
		}
	}
	for o, n := range outcomes {
		ch <- prometheus.MustNewConstMetric(c.queries, prometheus.CounterValue, float64(n), k.name, reqpool.Outcome(o).String())
	}
	for i := range k.reasons {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue,
			float64(k.reasons[i].Load()), k.name, reqpool.RefusalReason(i).String())
	}
	ch <- histogram(c.wait, &waits, k.waitSum.Load(), k.name)
	ch <- histogram(c.run, &runs, k.runSum.Load(), k.name)
}

// histogram returns a constant histogram of desc with the given counts by
// bucket, the given sum in nanoseconds and the given class.
func histogram(desc *prometheus.Desc, counts *[nBuckets + 1]uint64, sum uint64, class string) prometheus.Metric {
	cumulative := make(map[float64]uint64, nBuckets)
	var total uint64
	for i, n := range counts {
		total += n
		if i < nBuckets {
			cumulative[bucketBounds[i].Seconds()] = total
		}
	}
	return prometheus.MustNewConstHistogram(desc, total, time.Duration(sum).Seconds(), cumulative, class)
}
