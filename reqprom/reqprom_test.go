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
	"github.com/reqpool/reqpool/reqprom"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newPool returns a pool that is shut down when the test ends.
func newPool(t testing.TB, cfg reqpool.Config) *reqpool.Pool {
	t.Helper()
	p, err := reqpool.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return p
}

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

// sleep is a query that takes d, or returns early with the context's error.
func sleep(d time.Duration) reqpool.Query {
	return reqpool.Func(func(ctx context.Context) error {
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-tm.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

var (
	ok      = reqpool.Func(func(context.Context) error { return nil })
	errBoom = errors.New("boom")
	fail    = reqpool.Func(func(context.Context) error { return errBoom })
	bug     = reqpool.Func(func(context.Context) error { panic("bug") })
)

// histogram returns the histogram called name from reg.
func histogram(t *testing.T, reg prometheus.Gatherer, name string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatalf("no %s gathered", name)
	return nil
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
# HELP reqpool_queries_total Queries that ended, by outcome: ok, error, panic, or dropped (never started).
# TYPE reqpool_queries_total counter
# HELP reqpool_rejected_total Fanout calls refused as a whole, by reason: queue_full, too_many (above MaxFanout) or closed (after Shutdown).
# TYPE reqpool_rejected_total counter
# HELP reqpool_queries_queued Queries admitted and waiting to start.
# TYPE reqpool_queries_queued gauge
# HELP reqpool_queries_running Queries executing now.
# TYPE reqpool_queries_running gauge
# HELP reqpool_requests_active Requests (handles) that have fanned out and are not yet released.
# TYPE reqpool_requests_active gauge
# HELP reqpool_workers The most queries that execute at once (reqpool Config.Workers).
# TYPE reqpool_workers gauge
`

// expect compares reg's gauges and counters with the values given, in the
// text format, one per line.
func expect(t *testing.T, reg prometheus.Gatherer, values string) {
	t.Helper()
	err := testutil.GatherAndCompare(reg, strings.NewReader(header+values),
		"reqpool_workers", "reqpool_queries_running", "reqpool_queries_queued", "reqpool_requests_active",
		"reqpool_queries_total", "reqpool_rejected_total")
	if err != nil {
		t.Error(err)
	}
}

// TestCollector drives a real pool through every outcome and every refusal
// and checks each metric.
func TestCollector(t *testing.T) {
	p := newPool(t, reqpool.Config{Workers: 1, QueueSize: 2, MaxFanout: 3})
	reg, c := register(t, p)

	// Every series is there from the start, at 0: 4 gauges, 4 outcomes,
	// 3 reasons, 2 histograms.
	if n := testutil.CollectAndCount(c); n != 13 {
		t.Errorf("CollectAndCount = %d, want 13", n)
	}
	expect(t, reg, `
reqpool_workers 1
reqpool_queries_running 0
reqpool_queries_queued 0
reqpool_requests_active 0
reqpool_queries_total{outcome="ok"} 0
reqpool_queries_total{outcome="error"} 0
reqpool_queries_total{outcome="panic"} 0
reqpool_queries_total{outcome="dropped"} 0
reqpool_rejected_total{reason="queue_full"} 0
reqpool_rejected_total{reason="too_many"} 0
reqpool_rejected_total{reason="closed"} 0
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
	if err := reqpool.Fanout(ctx, ok, ok, ok, ok); !errors.Is(err, reqpool.ErrTooManyTasks) {
		t.Fatalf("Fanout of 4 = %v, want ErrTooManyTasks", err)
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
reqpool_queries_running 1
reqpool_queries_queued 2
reqpool_requests_active 1
reqpool_queries_total{outcome="ok"} 2
reqpool_queries_total{outcome="error"} 1
reqpool_queries_total{outcome="panic"} 1
reqpool_queries_total{outcome="dropped"} 2
reqpool_rejected_total{reason="queue_full"} 1
reqpool_rejected_total{reason="too_many"} 1
reqpool_rejected_total{reason="closed"} 0
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
reqpool_queries_running 0
reqpool_queries_queued 0
reqpool_requests_active 0
reqpool_queries_total{outcome="ok"} 5
reqpool_queries_total{outcome="error"} 1
reqpool_queries_total{outcome="panic"} 1
reqpool_queries_total{outcome="dropped"} 2
reqpool_rejected_total{reason="queue_full"} 1
reqpool_rejected_total{reason="too_many"} 1
reqpool_rejected_total{reason="closed"} 1
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
		"# TYPE reqpool_queries_running gauge",
		"# TYPE reqpool_queries_queued gauge",
		"# TYPE reqpool_requests_active gauge",
		"# TYPE reqpool_queries_total counter",
		"# TYPE reqpool_rejected_total counter",
		"# TYPE reqpool_queue_wait_seconds histogram",
		"# TYPE reqpool_query_duration_seconds histogram",
		"\nreqpool_workers 4\n",
		"\nreqpool_requests_active 1\n",
		`reqpool_queries_total{outcome="ok"} 3`,
		`reqpool_queries_total{outcome="panic"} 0`,
		`reqpool_rejected_total{reason="queue_full"} 0`,
		`reqpool_queue_wait_seconds_bucket{le="0.0001"}`,
		`reqpool_queue_wait_seconds_bucket{le="+Inf"} 3`,
		"reqpool_queue_wait_seconds_count 3",
		`reqpool_query_duration_seconds_bucket{le="10"} 3`,
		"reqpool_query_duration_seconds_sum ",
		"reqpool_query_duration_seconds_count 3",
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
// documented, and takes it with a label of its own.
func TestTwoPools(t *testing.T) {
	reg, _ := register(t, newPool(t, reqpool.Config{}))
	p2 := newPool(t, reqpool.Config{Workers: 3})
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
`), "reqpool_workers")
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

// TestConcurrent scrapes while many requests fan out, under -race, and then
// checks the counters against the pool's own Stats.
func TestConcurrent(t *testing.T) {
	p := newPool(t, reqpool.Config{Workers: 4, QueueSize: 16, MaxFanout: 8})
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
			for i := range 200 {
				ctx, release := p.NewContext(context.Background())
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
	byLabel := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			byLabel[key] = m.GetCounter().GetValue()
		}
	}
	s := p.Stats()
	ended := byLabel["reqpool_queries_total/ok"] + byLabel["reqpool_queries_total/error"] + byLabel["reqpool_queries_total/panic"]
	if ended != float64(s.Completed) ||
		byLabel["reqpool_queries_total/error"]+byLabel["reqpool_queries_total/panic"] != float64(s.Failed) ||
		byLabel["reqpool_queries_total/dropped"] != float64(s.Dropped) {
		t.Errorf("queries_total %v, Stats %+v", byLabel, s)
	}
	rejected := byLabel["reqpool_rejected_total/queue_full"] + byLabel["reqpool_rejected_total/too_many"] + byLabel["reqpool_rejected_total/closed"]
	if rejected != float64(s.Rejected) || byLabel["reqpool_rejected_total/too_many"] == 0 {
		t.Errorf("rejected_total %v, Stats %+v", byLabel, s)
	}
	if n := histogram(t, reg, "reqpool_queue_wait_seconds").GetSampleCount(); n != s.Completed+s.Dropped {
		t.Errorf("queue wait count %d, want Completed+Dropped %d", n, s.Completed+s.Dropped)
	}
	if n := histogram(t, reg, "reqpool_query_duration_seconds").GetSampleCount(); n != s.Completed {
		t.Errorf("query duration count %d, want Completed %d", n, s.Completed)
	}
}
