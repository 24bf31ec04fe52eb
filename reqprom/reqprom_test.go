package reqprom_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/internal/reqtest"
	"github.com/reqpool/reqpool/reqprom"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// register returns a new registry with p's collector in it.
func register(t testing.TB, p *reqpool.Pool) (*prometheus.Registry, prometheus.Collector) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := reqprom.NewCollector(p)
	if err := reg.Register(c); err != nil {
		t.Fatalf("Register: %v", err)
	}
	return reg, c
}

var (
	ok      = reqpool.Func(func(context.Context) error { return nil })
	errBoom = errors.New("boom")
	fail    = reqpool.Func(func(context.Context) error { return errBoom })
	bug     = reqpool.Func(func(context.Context) error { panic("bug") })
)

// histogram returns the histogram called name from reg, of class "".
func histogram(t *testing.T, reg prometheus.Gatherer, name string) *dto.Histogram {
	t.Helper()
	return classHistogram(t, reg, name, "")
}

// classHistogram returns the histogram called name of class from reg.
func classHistogram(t *testing.T, reg prometheus.Gatherer, name, class string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "class") == class {
				return m.GetHistogram()
			}
		}
	}
	t.Fatalf("no %s{class=%q} gathered", name, class)
	return nil
}

// label returns the value of m's label called name, "" if it has none.
func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// below returns how many of h's observations are at most le seconds.
func below(t *testing.T, h *dto.Histogram, le float64) uint64 {
	t.Helper()
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	t.Fatalf("no bucket le=%v", le)
	return 0
}

const header = `
# HELP reqpool_queries_total Queries that ended, by class and outcome: ok, error, panic, cancelled (an error after their Fanout's context ended), or dropped (never started).
# TYPE reqpool_queries_total counter
# HELP reqpool_rejected_total Fanout calls refused as a whole, by class and reason: queue_full, too_many (above MaxFanout) or closed (after Shutdown).
# TYPE reqpool_rejected_total counter
# HELP reqpool_queries_queued Queries admitted and waiting to start, by class.
# TYPE reqpool_queries_queued gauge
# HELP reqpool_queries_running Queries executing now, by class.
# TYPE reqpool_queries_running gauge
# HELP reqpool_flows_active Named flows (reqpool Config.Classify) with a request registered or a query executing, by class.
# TYPE reqpool_flows_active gauge
# HELP reqpool_requests_active Requests (handles) that have fanned out and are not yet released.
# TYPE reqpool_requests_active gauge
# HELP reqpool_workers The most queries that execute at once (reqpool Config.Workers).
# TYPE reqpool_workers gauge
`

// gaugesAndCounters are the metrics that expect compares.
var gaugesAndCounters = []string{
	"reqpool_workers", "reqpool_queries_running", "reqpool_queries_queued", "reqpool_flows_active",
	"reqpool_requests_active", "reqpool_queries_total", "reqpool_rejected_total",
}

// expect compares reg's gauges and counters with the values given, in the
// text format, one per line.
func expect(t *testing.T, reg prometheus.Gatherer, values string) {
	t.Helper()
	err := testutil.GatherAndCompare(reg, strings.NewReader(header+values), gaugesAndCounters...)
	if err != nil {
		t.Error(err)
	}
}

// TestCollector drives a real pool through every outcome and every refusal
// and checks each metric.
func TestCollector(t *testing.T) {
	p := newPool(t, reqpool.Config{Workers: 1, QueueSize: 2, MaxFanout: 3})
	reg, c := register(t, p)

	// Every series is there from the start, at 0: 6 gauges, 5 outcomes,
	// 3 reasons, 2 histograms, all but 3 gauges with class="".
	if n := testutil.CollectAndCount(c); n != 16 {
		t.Errorf("CollectAndCount = %d, want 16", n)
	}
	expect(t, reg, `
reqpool_workers 1
reqpool_queries_running{class=""} 0
reqpool_queries_queued{class=""} 0
reqpool_flows_active{class=""} 0
reqpool_requests_active 0
reqpool_queries_total{class="",outcome="ok"} 0
reqpool_queries_total{class="",outcome="error"} 0
reqpool_queries_total{class="",outcome="panic"} 0
reqpool_queries_total{class="",outcome="cancelled"} 0
reqpool_queries_total{class="",outcome="dropped"} 0
reqpool_rejected_total{class="",reason="queue_full"} 0
reqpool_rejected_total{class="",reason="too_many"} 0
reqpool_rejected_total{class="",reason="closed"} 0
`)

	ctx, release := p.NewContext(context.Background())
	defer release()

	// Two that succeed, one of them for 30 ms.
	if err := reqpool.Fanout(ctx, ok, sleep(30*time.Millisecond)); err != nil {
		t.Fatalf("Fanout: %v", err)
	}
	run := histogram(t, reg, "reqpool_query_duration_seconds")
	if run.GetSampleCount() != 2 || below(t, run, 0.025) > 1 || run.GetSampleSum() < 0.030 {
		t.Errorf("query duration after ok and 30 ms: count %d, ≤25ms %d, sum %v",
			run.GetSampleCount(), below(t, run, 0.025), run.GetSampleSum())
	}

	// In one slot, the failure runs first and drops both siblings.
	if err := reqpool.Fanout(ctx, fail, ok, ok); !errors.Is(err, errBoom) {
		t.Fatalf("Fanout = %v, want errBoom", err)
	}
	// A panic is counted as such.
	var pe *reqpool.PanicError
	if err := reqpool.Fanout(ctx, bug); !errors.As(err, &pe) {
		t.Fatalf("Fanout = %v, want a *PanicError", err)
	}

	// Refused: above MaxFanout.
	if err := reqpool.Fanout(ctx, ok, ok, ok, ok); !errors.Is(err, reqpool.ErrTooManyQueries) {
		t.Fatalf("Fanout of 4 = %v, want ErrTooManyQueries", err)
	}

	// Refused: the queue is full. One query holds the only worker and two
	// wait behind it, filling QueueSize 2, for at least 20 ms.
	hold, running := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- reqpool.Fanout(ctx, reqpool.Func(func(context.Context) error {
			close(running)
			<-hold
			return nil
		}), ok, ok)
	}()
	<-running
	if err := reqpool.Fanout(ctx, ok); !errors.Is(err, reqpool.ErrQueueFull) {
		t.Fatalf("Fanout on a full queue = %v, want ErrQueueFull", err)
	}
	expect(t, reg, `
reqpool_workers 1
reqpool_queries_running{class=""} 1
reqpool_queries_queued{class=""} 2
reqpool_flows_active{class=""} 0
reqpool_requests_active 1
reqpool_queries_total{class="",outcome="ok"} 2
reqpool_queries_total{class="",outcome="error"} 1
reqpool_queries_total{class="",outcome="panic"} 1
reqpool_queries_total{class="",outcome="cancelled"} 0
reqpool_queries_total{class="",outcome="dropped"} 2
reqpool_rejected_total{class="",reason="queue_full"} 1
reqpool_rejected_total{class="",reason="too_many"} 1
reqpool_rejected_total{class="",reason="closed"} 0
`)
	time.Sleep(20 * time.Millisecond)
	close(hold)
	if err := <-done; err != nil {
		t.Fatalf("held Fanout: %v", err)
	}

	// Refused: closed.
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := reqpool.Fanout(ctx, ok); !errors.Is(err, reqpool.ErrClosed) {
		t.Fatalf("Fanout after Shutdown = %v, want ErrClosed", err)
	}
	release()
	expect(t, reg, `
reqpool_workers 1
reqpool_queries_running{class=""} 0
reqpool_queries_queued{class=""} 0
reqpool_flows_active{class=""} 0
reqpool_requests_active 0
reqpool_queries_total{class="",outcome="ok"} 5
reqpool_queries_total{class="",outcome="error"} 1
reqpool_queries_total{class="",outcome="panic"} 1
reqpool_queries_total{class="",outcome="cancelled"} 0
reqpool_queries_total{class="",outcome="dropped"} 2
reqpool_rejected_total{class="",reason="queue_full"} 1
reqpool_rejected_total{class="",reason="too_many"} 1
reqpool_rejected_total{class="",reason="closed"} 1
`)

	// Every query ended is in the queue wait, with the two that waited
	// behind the held one above 10 ms; those that started are in the
	// duration.
	wait := histogram(t, reg, "reqpool_queue_wait_seconds")
	if wait.GetSampleCount() != 9 || wait.GetSampleCount()-below(t, wait, 0.01) < 2 || wait.GetSampleSum() < 0.040 {
		t.Errorf("queue wait: count %d (want 9), above 10ms %d (want ≥ 2), sum %v (want ≥ 0.04)",
			wait.GetSampleCount(), wait.GetSampleCount()-below(t, wait, 0.01), wait.GetSampleSum())
	}
	run = histogram(t, reg, "reqpool_query_duration_seconds")
	if run.GetSampleCount() != 7 {
		t.Errorf("query duration: count %d, want 7", run.GetSampleCount())
	}
	if stats := p.Stats(); stats.Completed != 7 || stats.Dropped != 2 || stats.Failed != 2 || stats.Rejected != 3 {
		t.Errorf("Stats = %+v, disagrees with the metrics", stats)
	}
}

// TestBuckets checks the histograms' bucket bounds, in seconds.
func TestBuckets(t *testing.T) {
	p := newPool(t, reqpool.Config{})
	reg, _ := register(t, p)
	want := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	for _, name := range []string{"reqpool_queue_wait_seconds", "reqpool_query_duration_seconds"} {
		var got []float64
		for _, b := range histogram(t, reg, name).GetBucket() {
			got = append(got, b.GetUpperBound())
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s buckets %v, want %v", name, got, want)
		}
	}
}

// TestLint runs client_golang's naming lint on every metric.
func TestLint(t *testing.T) {
	p := newPool(t, reqpool.Config{})
	problems, err := testutil.CollectAndLint(reqprom.NewCollector(p))
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("lint: %s: %s", pr.Metric, pr.Text)
	}
}

// TestHTTP scrapes the registry over HTTP, as Prometheus does.
func TestHTTP(t *testing.T) {
	p := newPool(t, reqpool.Config{Workers: 4})
	reg, _ := register(t, p)
	ctx, release := p.NewContext(context.Background())
	defer release()
	if err := reqpool.Fanout(ctx, ok, ok, ok); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	text := string(body)
	for _, want := range []string{
		"# TYPE reqpool_workers gauge",
		"# TYPE reqpool_limit gauge",
		"# TYPE reqpool_queries_running gauge",
		"# TYPE reqpool_queries_queued gauge",
		"# TYPE reqpool_requests_active gauge",
		"# TYPE reqpool_queries_total counter",
		"# TYPE reqpool_rejected_total counter",
		"# TYPE reqpool_queue_wait_seconds histogram",
		"# TYPE reqpool_query_duration_seconds histogram",
		"# TYPE reqpool_flows_active gauge",
		"\nreqpool_workers 4\n",
		"\nreqpool_limit 4\n",
		"\nreqpool_requests_active 1\n",
		`reqpool_queries_running{class=""} 0`,
		`reqpool_flows_active{class=""} 0`,
		`reqpool_queries_total{class="",outcome="ok"} 3`,
		`reqpool_queries_total{class="",outcome="panic"} 0`,
		`reqpool_rejected_total{class="",reason="queue_full"} 0`,
		`reqpool_queue_wait_seconds_bucket{class="",le="0.0001"}`,
		`reqpool_queue_wait_seconds_bucket{class="",le="+Inf"} 3`,
		`reqpool_queue_wait_seconds_count{class=""} 3`,
		`reqpool_query_duration_seconds_bucket{class="",le="10"} 3`,
		`reqpool_query_duration_seconds_sum{class=""} `,
		`reqpool_query_duration_seconds_count{class=""} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", text)
	}
}

// TestTwoPools: one registry refuses a second pool's collector, as
// documented, and takes it with a label of its own, even when one pool has
// classes and the other none: every series has a class label.
func TestTwoPools(t *testing.T) {
	reg, _ := register(t, newPool(t, reqpool.Config{}))
	p2 := newPool(t, reqpool.Config{Workers: 3, Classes: []reqpool.Class{{Name: "web"}, {Name: "batch"}}})
	var are prometheus.AlreadyRegisteredError
	if err := reg.Register(reqprom.NewCollector(p2)); !errors.As(err, &are) {
		t.Fatalf("second pool's Register = %v, want AlreadyRegisteredError", err)
	}

	reg = prometheus.NewRegistry()
	for name, p := range map[string]*reqpool.Pool{"a": newPool(t, reqpool.Config{Workers: 2}), "b": p2} {
		if err := prometheus.WrapRegistererWith(prometheus.Labels{"pool": name}, reg).Register(reqprom.NewCollector(p)); err != nil {
			t.Fatalf("Register pool %s: %v", name, err)
		}
	}
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP reqpool_workers The most queries that execute at once (reqpool Config.Workers).
# TYPE reqpool_workers gauge
reqpool_workers{pool="a"} 2
reqpool_workers{pool="b"} 3
# HELP reqpool_queries_running Queries executing now, by class.
# TYPE reqpool_queries_running gauge
reqpool_queries_running{class="",pool="a"} 0
reqpool_queries_running{class="web",pool="b"} 0
reqpool_queries_running{class="batch",pool="b"} 0
`), "reqpool_workers", "reqpool_queries_running")
	if err != nil {
		t.Error(err)
	}
}

func TestNilPool(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewCollector(nil) did not panic")
		}
	}()
	reqprom.NewCollector(nil)
}

// TestConcurrent scrapes while many requests of two classes fan out, under
// -race, and then checks each class's counters against the pool's own
// Stats.
func TestConcurrent(t *testing.T) {
	p := newPool(t, reqpool.Config{Workers: 4, QueueSize: 16, MaxFanout: 8,
		Classes: []reqpool.Class{{Name: "web", Share: 3}, {Name: "batch", QueueSize: 4}}})
	reg, _ := register(t, p)

	stop := make(chan struct{})
	var scrapes sync.WaitGroup
	scrapes.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			class := []string{"web", "batch"}[g%2]
			for i := range 200 {
				ctx, release, err := p.NewClassContext(context.Background(), class, fmt.Sprint("tenant-", i%5))
				if err != nil {
					t.Error(err)
					return
				}
				qs := []reqpool.Query{ok, ok, sleep(time.Duration(i%3) * 100 * time.Microsecond)}
				switch (g + i) % 7 {
				case 0:
					qs = append(qs, fail, ok, ok)
				case 1:
					qs = append(qs, bug)
				case 2:
					qs = append(qs, make([]reqpool.Query, 9)...) // above MaxFanout
				}
				reqpool.Fanout(ctx, qs...)
				release()
			}
		})
	}
	wg.Wait()
	close(stop)
	scrapes.Wait()

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// byLabel has the counters by name, class and outcome or reason.
	byLabel := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "/" + label(m, "class") + "/" + label(m, "outcome") + label(m, "reason")
			byLabel[key] = m.GetCounter().GetValue()
		}
	}
	s := p.Stats()
	if len(s.Classes) != 2 {
		t.Fatalf("Stats.Classes = %+v, want web and batch", s.Classes)
	}
	for _, k := range s.Classes {
		q := func(outcome string) float64 { return byLabel["reqpool_queries_total/"+k.Name+"/"+outcome] }
		r := func(reason string) float64 { return byLabel["reqpool_rejected_total/"+k.Name+"/"+reason] }
		if q("ok")+q("error")+q("panic")+q("cancelled") != float64(k.Completed) || q("error")+q("panic") != float64(k.Failed) ||
			q("cancelled") != float64(k.Cancelled) || q("dropped") != float64(k.Dropped) || k.Completed == 0 {
			t.Errorf("class %q: queries_total ok %v error %v panic %v cancelled %v dropped %v, Stats %+v",
				k.Name, q("ok"), q("error"), q("panic"), q("cancelled"), q("dropped"), k)
		}
		if r("queue_full")+r("too_many")+r("closed") != float64(k.Rejected) || r("too_many") == 0 {
			t.Errorf("class %q: rejected_total queue_full %v too_many %v closed %v, Stats %+v",
				k.Name, r("queue_full"), r("too_many"), r("closed"), k)
		}
		if n := classHistogram(t, reg, "reqpool_queue_wait_seconds", k.Name).GetSampleCount(); n != k.Completed+k.Dropped {
			t.Errorf("class %q: queue wait count %d, want Completed+Dropped %d", k.Name, n, k.Completed+k.Dropped)
		}
		if n := classHistogram(t, reg, "reqpool_query_duration_seconds", k.Name).GetSampleCount(); n != k.Completed {
			t.Errorf("class %q: query duration count %d, want Completed %d", k.Name, n, k.Completed)
		}
	}
	for key := range byLabel {
		if strings.Contains(key, "tenant") {
			t.Errorf("a flow in a label: %s", key)
		}
	}
}

// TestClasses serves requests of two classes through reqpool.Middleware,
// whose Config.Classify reads the class and the flow from the URL, fills
// the batch class's queue so that one of its requests is refused, and
// scrapes /metrics over HTTP, as Prometheus does: every series has its
// class, and no flow shows.
func TestClasses(t *testing.T) {
	p := newPool(t, reqpool.Config{
		Workers: 2, QueueSize: 4, MaxFanout: 3,
		Classes: []reqpool.Class{{Name: "interactive", Share: 3}, {Name: "batch", QueueSize: 1}},
		Classify: func(r *http.Request) (class, flow string) {
			return r.URL.Query().Get("class"), r.URL.Query().Get("flow")
		},
	})
	reg, _ := register(t, p)

	hold, started := make(chan struct{}), make(chan struct{}, 2)
	unhold := sync.OnceFunc(func() { close(hold) })
	defer unhold() // before srv.Close waits for the handlers, if the test fails
	held := reqpool.Func(func(context.Context) error {
		started <- struct{}{}
		<-hold
		return nil
	})
	app := http.NewServeMux()
	fanout := func(path string, qs ...reqpool.Query) {
		app.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if err := reqpool.Fanout(r.Context(), qs...); err != nil {
				reqpool.WriteError(w, r, err)
			}
		})
	}
	fanout("/hold", held, held, ok) // both workers, and one query queued
	fanout("/one", ok)
	fanout("/four", ok, ok, ok, ok) // above MaxFanout
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", reqpool.Middleware(p)(app))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections() // testutil.ScrapeAndCompare's

	get := func(path string, want int) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, want)
		}
	}
	scrape := func(values string) {
		t.Helper()
		if err := testutil.ScrapeAndCompare(srv.URL+"/metrics", strings.NewReader(header+values), gaugesAndCounters...); err != nil {
			t.Error(err)
		}
	}

	// A batch request holds both workers and fills the batch queue: the
	// next batch request is refused, whatever the interactive queue holds.
	var wg sync.WaitGroup
	wg.Go(func() { get("/hold?class=batch&flow=tenant-a", http.StatusOK) })
	<-started
	<-started
	get("/one?class=batch&flow=tenant-b", http.StatusServiceUnavailable)
	get("/four?class=interactive&flow=user-1", http.StatusInternalServerError)
	wg.Go(func() { get("/one?class=interactive&flow=user-2", http.StatusOK) })
	waitFor(t, p, func(s reqpool.Stats) bool { return s.Classes[0].Queued == 1 && s.Requests == 2 })
	scrape(`
reqpool_workers 2
reqpool_queries_running{class="interactive"} 0
reqpool_queries_running{class="batch"} 2
reqpool_queries_queued{class="interactive"} 1
reqpool_queries_queued{class="batch"} 1
reqpool_flows_active{class="interactive"} 1
reqpool_flows_active{class="batch"} 1
reqpool_requests_active 2
reqpool_queries_total{class="interactive",outcome="ok"} 0
reqpool_queries_total{class="interactive",outcome="error"} 0
reqpool_queries_total{class="interactive",outcome="panic"} 0
reqpool_queries_total{class="interactive",outcome="cancelled"} 0
reqpool_queries_total{class="interactive",outcome="dropped"} 0
reqpool_queries_total{class="batch",outcome="ok"} 0
reqpool_queries_total{class="batch",outcome="error"} 0
reqpool_queries_total{class="batch",outcome="panic"} 0
reqpool_queries_total{class="batch",outcome="cancelled"} 0
reqpool_queries_total{class="batch",outcome="dropped"} 0
reqpool_rejected_total{class="interactive",reason="queue_full"} 0
reqpool_rejected_total{class="interactive",reason="too_many"} 1
reqpool_rejected_total{class="interactive",reason="closed"} 0
reqpool_rejected_total{class="batch",reason="queue_full"} 1
reqpool_rejected_total{class="batch",reason="too_many"} 0
reqpool_rejected_total{class="batch",reason="closed"} 0
`)

	time.Sleep(20 * time.Millisecond)
	unhold()
	wg.Wait()
	scrape(`
reqpool_workers 2
reqpool_queries_running{class="interactive"} 0
reqpool_queries_running{class="batch"} 0
reqpool_queries_queued{class="interactive"} 0
reqpool_queries_queued{class="batch"} 0
reqpool_flows_active{class="interactive"} 0
reqpool_flows_active{class="batch"} 0
reqpool_requests_active 0
reqpool_queries_total{class="interactive",outcome="ok"} 1
reqpool_queries_total{class="interactive",outcome="error"} 0
reqpool_queries_total{class="interactive",outcome="panic"} 0
reqpool_queries_total{class="interactive",outcome="cancelled"} 0
reqpool_queries_total{class="interactive",outcome="dropped"} 0
reqpool_queries_total{class="batch",outcome="ok"} 3
reqpool_queries_total{class="batch",outcome="error"} 0
reqpool_queries_total{class="batch",outcome="panic"} 0
reqpool_queries_total{class="batch",outcome="cancelled"} 0
reqpool_queries_total{class="batch",outcome="dropped"} 0
reqpool_rejected_total{class="interactive",reason="queue_full"} 0
reqpool_rejected_total{class="interactive",reason="too_many"} 1
reqpool_rejected_total{class="interactive",reason="closed"} 0
reqpool_rejected_total{class="batch",reason="queue_full"} 1
reqpool_rejected_total{class="batch",reason="too_many"} 0
reqpool_rejected_total{class="batch",reason="closed"} 0
`)

	// The histograms, by class: the interactive query waited behind the
	// held ones, which ran 20 ms or more.
	if h := classHistogram(t, reg, "reqpool_queue_wait_seconds", "interactive"); h.GetSampleCount() != 1 || h.GetSampleSum() < 0.02 {
		t.Errorf("interactive queue wait: count %d (want 1), sum %v (want ≥ 0.02)", h.GetSampleCount(), h.GetSampleSum())
	}
	if h := classHistogram(t, reg, "reqpool_query_duration_seconds", "batch"); h.GetSampleCount() != 3 || h.GetSampleSum() < 0.04 {
		t.Errorf("batch query duration: count %d (want 3), sum %v (want ≥ 0.04)", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, k := range p.Stats().Classes {
		if n := classHistogram(t, reg, "reqpool_queue_wait_seconds", k.Name).GetSampleCount(); n != k.Completed+k.Dropped {
			t.Errorf("class %q: queue wait count %d, Stats %+v", k.Name, n, k)
		}
	}

	// The exposition as Prometheus reads it, without a flow anywhere.
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	for _, want := range []string{
		`reqpool_rejected_total{class="batch",reason="queue_full"} 1`,
		`reqpool_queue_wait_seconds_bucket{class="interactive",le="+Inf"} 1`,
		`reqpool_query_duration_seconds_count{class="batch"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	for _, flow := range []string{"tenant-a", "tenant-b", "user-1", "user-2"} {
		if strings.Contains(text, flow) {
			t.Errorf("exposition has the flow %q", flow)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", text)
	}
}

// waitFor waits up to 5 s for p's Stats to satisfy cond.
func waitFor(t *testing.T, p *reqpool.Pool, cond func(reqpool.Stats) bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(p.Stats()); {
		if time.Now().After(deadline) {
			t.Fatalf("Stats %+v: condition not met in 5 s", p.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

var (
	newPool = reqtest.NewPool
	sleep   = reqtest.Sleep
)
