package pgtest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reqpool/reqpool"
)

// A Phase is a stretch of the adaptive workload running one statement.
type Phase struct {
	Name string
	SQL  string
	D    time.Duration
}

// The statements of the phases: a query that waits 20 ms, and one that
// keeps a core busy for about 4 ms on this project's machine.
const (
	WaitSQL = "SELECT pg_sleep(0.02)"
	CPUSQL  = "SELECT count(*) FROM generate_series(1, 20000)"
)

// PhaseResult is what one phase measured.
type PhaseResult struct {
	Name     string
	QPS      float64       // queries completed per second
	SmallP99 time.Duration // p99 of the requests of 2 queries
	LateP99  time.Duration // the same, of those that started in the phase's second half
	LargeP99 time.Duration // p99 of the requests of 16
	Limit    int           // the median of Stats.Limit over the phase's second half
	Settle   time.Duration // from the phase's start until Limit stays within [0.4×, 2×] its median, probes' halving included
	Failed   int           // requests not answered 200
}

// String gives r in one line, for a test's log.
func (r PhaseResult) String() string {
	return fmt.Sprintf("%s: %.0f queries/s, small p99 %v (second half %v), large p99 %v, limit %d (settled in %v), %d failed",
		r.Name, r.QPS, r.SmallP99.Round(time.Millisecond), r.LateP99.Round(time.Millisecond), r.LargeP99.Round(time.Millisecond), r.Limit, r.Settle.Round(10*time.Millisecond), r.Failed)
}

// RunPhases serves the adaptive workload through a real server on a pool
// of cfg, opened on dsn with open: 16 clients sending a Fanout of 2
// queries and 4 clients a Fanout of 16, closed loop, through the phases
// in a row, with Stats.Limit sampled every 10 ms.
func RunPhases(t testing.TB, open Opener, dsn string, cfg reqpool.Config, phases []Phase) []PhaseResult {
	p := NewPool(t, cfg)
	db := Open(t, open, dsn, p)
	var phase atomic.Int32
	url, c := Serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		q := reqpool.Exec(db, phases[phase.Load()].SQL)
		qs := make([]reqpool.Query, n)
		for i := range qs {
			qs[i] = q
		}
		if err := reqpool.Fanout(r.Context(), qs...); err != nil {
			reqpool.WriteError(w, r, err)
		}
	})
	rec := newPhaseRecorder(len(phases))
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 20 {
		n := 2
		if i >= 16 {
			n = 16
		}
		wg.Go(func() { rec.client(ctx, c, fmt.Sprintf("%s?n=%d", url, n), n, &phase) })
	}
	wg.Go(func() { rec.sampleLimit(ctx, p, &phase) })
	for i, ph := range phases {
		phase.Store(int32(i))
		rec.start(i)
		time.Sleep(ph.D)
	}
	rec.start(len(phases))
	stop()
	wg.Wait()
	out := make([]PhaseResult, len(phases))
	for i, ph := range phases {
		out[i] = rec.result(i, ph.Name)
	}
	return out
}

// phaseRecorder collects, per phase, the requests' latencies and the
// limits sampled.
type phaseRecorder struct {
	mu      sync.Mutex // protects the fields below
	starts  []time.Time
	small   [][]reqTime
	large   [][]time.Duration
	queries []int
	failed  []int
	limits  [][]limitSample
}

// reqTime is one request: when it started, since its phase's start, and
// how long it took.
type reqTime struct{ at, d time.Duration }

type limitSample struct {
	at    time.Duration // since the phase's start
	limit int
}

func newPhaseRecorder(n int) *phaseRecorder {
	return &phaseRecorder{starts: make([]time.Time, n+1), small: make([][]reqTime, n), large: make([][]time.Duration, n),
		queries: make([]int, n), failed: make([]int, n), limits: make([][]limitSample, n)}
}

func (r *phaseRecorder) start(i int) {
	r.mu.Lock()
	r.starts[i] = time.Now()
	r.mu.Unlock()
}

// client sends requests of n queries to url until ctx ends, each counted
// in the phase it started in.
func (r *phaseRecorder) client(ctx context.Context, c *http.Client, url string, n int, phase *atomic.Int32) {
	for ctx.Err() == nil {
		i := phase.Load()
		start := time.Now()
		status, _, err := get(ctx, c, url, "")
		if ctx.Err() != nil {
			return
		}
		d := time.Since(start)
		r.mu.Lock()
		switch {
		case err != nil || status != http.StatusOK:
			r.failed[i]++
		case n == 2:
			r.small[i] = append(r.small[i], reqTime{start.Sub(r.starts[i]), d})
		default:
			r.large[i] = append(r.large[i], d)
		}
		if err == nil && status == http.StatusOK {
			r.queries[i] += n
		}
		r.mu.Unlock()
	}
}

// sampleLimit records Stats.Limit every 10 ms until ctx ends.
func (r *phaseRecorder) sampleLimit(ctx context.Context, p *reqpool.Pool, phase *atomic.Int32) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		i := phase.Load()
		l := p.Stats().Limit
		r.mu.Lock()
		r.limits[i] = append(r.limits[i], limitSample{time.Since(r.starts[i]), l})
		r.mu.Unlock()
	}
}

// result sums phase i up.
func (r *phaseRecorder) result(i int, name string) PhaseResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.starts[i+1].Sub(r.starts[i])
	var small, late []time.Duration
	for _, q := range r.small[i] {
		small = append(small, q.d)
		if q.at >= d/2 {
			late = append(late, q.d)
		}
	}
	res := PhaseResult{Name: name, QPS: float64(r.queries[i]) / d.Seconds(), Failed: r.failed[i],
		SmallP99: p99(small), LateP99: p99(late), LargeP99: p99(r.large[i])}
	ls := r.limits[i]
	var lateLimits []int
	for _, s := range ls {
		if s.at >= d/2 {
			lateLimits = append(lateLimits, s.limit)
		}
	}
	if len(lateLimits) == 0 {
		return res
	}
	slices.Sort(lateLimits)
	res.Limit = lateLimits[len(lateLimits)/2]
	lo, hi := res.Limit*2/5, res.Limit*2
	for _, s := range ls {
		if s.limit < lo || s.limit > hi {
			res.Settle = s.at
		}
	}
	return res
}

func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*99/100)]
}

// Adaptive runs the workload through the phases wait, CPU, wait (3 s
// each) on an adaptive pool of 64 workers at most. The limit must come
// down in the CPU phase, where 64 queries at once only time-share the
// machine's cores, and go back up in the wait phases, where more queries
// at once cost the database nothing: the median limit of the CPU phase's
// second half at most 16, of each wait phase's at least 32. The log line
// gives each phase's throughput, p99s, limit and settling time.
func Adaptive(t *testing.T, open Opener) {
	phases := []Phase{{"wait", WaitSQL, 3 * time.Second}, {"cpu", CPUSQL, 3 * time.Second}, {"wait", WaitSQL, 3 * time.Second}}
	res := RunPhases(t, open, Env(t, "DATABASE_URL"), reqpool.Config{Workers: 64, Adaptive: true, MaxFanout: 16}, phases)
	for _, r := range res {
		t.Log(r)
		if r.Failed > 0 {
			t.Errorf("%s: %d requests failed", r.Name, r.Failed)
		}
	}
	if l := res[1].Limit; l > 16 {
		t.Errorf("CPU phase: limit %d, want at most 16 (64 queries at once only time-share the cores)", l)
	}
	for _, i := range []int{0, 2} {
		if l := res[i].Limit; l < 32 {
			t.Errorf("wait phase %d: limit %d, want at least 32 (waiting queries cost the database nothing)", i, l)
		}
	}
}
