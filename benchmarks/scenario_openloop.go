package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scenario 5, open-loop load: requests arrive as a Poisson process whatever
// the server does, as they do from many independent users, with a
// heavy-tailed fan-out. Below capacity every contender keeps up; above it an
// unbounded queue grows for as long as the overload lasts, while reqpool
// refuses what does not fit.
func init() {
	register(Scenario{ID: 5, Name: "openloop", Title: "Open-loop load", Run: runOpenLoop})
}

// openLoopParams sizes the scenario.
type openLoopParams struct {
	Workers   int
	QueueSize int           // reqpool's bound on waiting queries
	Task      time.Duration // every query's duration
	MaxN      int           // the largest fan-out
	ZipfS     float64       // P(n) ∝ n^-ZipfS on 1..MaxN
	Loads     []float64     // offered load as a share of capacity
	Level     time.Duration // how long each level offers load
	MeanN     float64       // the fan-out's mean, computed
	Capacity  float64       // requests per second the workers can serve: Workers / (MeanN × Task)
}

// arrival is one request of a schedule.
type arrival struct {
	At time.Duration // offset from the level's start
	N  int           // fan-out
}

// openLoopResult is one contender's measurements at one level.
type openLoopResult struct {
	Load       float64
	Offered    float64 // requests per second offered
	Sent       int
	OK         int       // answered 200
	Rejected   int       // answered 503
	Failed     int       // anything else
	P50, P99   jsonFloat // ms, of the requests answered 200
	Max        jsonFloat // ms, of the requests answered 200
	RejectP99  jsonFloat // ms, time to a 503; NaN without any
	Throughput float64   // requests answered 200 per second, from the first send to the last answer
	Busy       float64   // query-seconds of the requests answered 200, per second and worker
	Span       time.Duration
	// ByBucket has p50 and p99 (ms) of the requests answered 200 per
	// fan-out bucket (see sizeBuckets), to show who waits.
	ByBucket []bucketStats
	// P99Early and P99Late are the p99 (ms) of the requests answered 200
	// that were sent in the first and in the second half of the level: an
	// unbounded queue grows for as long as the overload lasts, a bounded one
	// does not.
	P99Early, P99Late jsonFloat
}

// bucketStats is the latency of one fan-out bucket.
type bucketStats struct {
	Lo, Hi   int // fan-outs Lo..Hi
	OK       int // requests answered 200
	Rejected int
	P50, P99 jsonFloat
}

// sizeBuckets splits fan-outs 1..64 into small, medium and large requests.
var sizeBuckets = [][2]int{{1, 4}, {5, 16}, {17, 32}, {33, 64}}

// openLoopRaw is the raw data.
type openLoopRaw struct {
	Params  openLoopParams
	Results map[string][]openLoopResult // by contender, one per level
}

func runOpenLoop(ctx context.Context, env *Env) (*Section, error) {
	p := openLoopParams{Workers: 8, QueueSize: 256, Task: 10 * time.Millisecond, MaxN: 64, ZipfS: 1.2,
		Loads: []float64{0.5, 0.8, 0.95, 1.2}, Level: env.Level}
	if env.Quick {
		p.Workers, p.QueueSize, p.Task = 4, 64, 2*time.Millisecond
	}
	p.MeanN = zipfMean(p.ZipfS, p.MaxN)
	p.Capacity = float64(p.Workers) / (p.MeanN * p.Task.Seconds())

	raw := openLoopRaw{Params: p, Results: map[string][]openLoopResult{}}
	var notes []string
	for li, load := range p.Loads {
		sched := schedule(uint64(li+1), load*p.Capacity, p.Level, p.ZipfS, p.MaxN)
		notes = append(notes, fmt.Sprintf("%.0f%%: %d requests (%s)", 100*load, len(sched), sizeHistogram(sched)))
		for _, f := range env.order(li) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r, err := openLoopOnce(ctx, f, p, sched)
			if err != nil {
				return nil, fmt.Errorf("%s at %.0f%%: %w", f.Name, 100*load, err)
			}
			r.Load = load
			raw.Results[f.Name] = append(raw.Results[f.Name], r)
			env.Logf("  openloop %3.0f%% %-9s ok %5d rej %4d p50 %7s p99 %7s ms, %6.1f req/s", 100*load, f.Name,
				r.OK, r.Rejected, fmtMs(float64(r.P50)), fmtMs(float64(r.P99)), r.Throughput)
		}
	}

	t := Table{Header: []string{"load", "contender", "offered req/s", "completed req/s", "p50 (ms)", "p99 (ms)",
		"max (ms)", "rejected", "503 p99 (ms)", "worker busy"}}
	for li, load := range p.Loads {
		for _, f := range env.Contenders {
			r := raw.Results[f.Name][li]
			rej := "0"
			if r.Rejected > 0 {
				rej = fmtPct(float64(r.Rejected) / float64(r.Sent))
			}
			t.Rows = append(t.Rows, []string{fmt.Sprintf("%.0f%%", 100*load), f.Name, fmt.Sprintf("%.1f", r.Offered),
				fmt.Sprintf("%.1f", r.Throughput), fmtMs(float64(r.P50)), fmtMs(float64(r.P99)), fmtMs(float64(r.Max)), rej, fmtMs(float64(r.RejectP99)),
				fmtPct(r.Busy)})
		}
	}

	bt := Table{
		Caption: "Who waits: p50 / p99 (ms) by fan-out, with the requests refused, at the two highest loads:",
		Header:  []string{"load", "contender"},
	}
	for _, b := range sizeBuckets {
		bt.Header = append(bt.Header, fmt.Sprintf("n %d–%d", b[0], b[1]))
	}
	for li := max(0, len(p.Loads)-2); li < len(p.Loads); li++ {
		for _, f := range env.Contenders {
			r := raw.Results[f.Name][li]
			row := []string{fmt.Sprintf("%.0f%%", 100*p.Loads[li]), f.Name}
			for _, b := range r.ByBucket {
				cell := fmtMs(float64(b.P50)) + " / " + fmtMs(float64(b.P99))
				if b.Rejected > 0 {
					cell += fmt.Sprintf(" (%d refused)", b.Rejected)
				}
				row = append(row, cell)
			}
			bt.Rows = append(bt.Rows, row)
		}
	}
	gt := Table{
		Caption: "Does the wait grow with the overload? p99 (ms) of the requests sent in the first and in the second half of each level:",
		Header:  []string{"contender"},
	}
	for _, load := range p.Loads {
		gt.Header = append(gt.Header, fmt.Sprintf("%.0f%% first / second", 100*load))
	}
	for _, f := range env.Contenders {
		row := []string{f.Name}
		for _, r := range raw.Results[f.Name] {
			row = append(row, fmtMs(float64(r.P99Early))+" / "+fmtMs(float64(r.P99Late)))
		}
		gt.Rows = append(gt.Rows, row)
	}

	var series []lineSeries
	for _, f := range env.Contenders {
		s := lineSeries{Name: f.Name}
		for _, r := range raw.Results[f.Name] {
			s.X = append(s.X, 100*r.Load)
			s.Y = append(s.Y, float64(r.P99))
		}
		series = append(series, s)
	}
	chart := filepath.Join(env.Results, "openloop_p99.svg")
	if err := writeLineChart(chart, lineChart{
		Title:  fmt.Sprintf("Open-loop load: p99 latency of answered requests, Workers=%d, %s queries, fan-out 1–%d", p.Workers, p.Task, p.MaxN),
		XLabel: "offered load (% of capacity)",
		YLabel: "p99 latency (ms, log scale)",
		Series: series,
		LogY:   true,
	}); err != nil {
		return nil, err
	}

	sec := &Section{
		Setup: fmt.Sprintf("Workers=%d, queries of %s. Requests arrive as a Poisson process; each has n queries, "+
			"P(n) ∝ n^-%.1f on 1..%d (a truncated Zipf: mean %.1f, most requests small, a few of 30–64). Capacity is "+
			"Workers / (mean n × query time) = %.1f requests/s. Each level offers its load for %s, then waits for every "+
			"answer; every contender sees the same seeded sequence of arrivals and sizes. reqpool has QueueSize=%d "+
			"(a full queue is about %s of work) and answers 503 when a request does not fit; the peers' queues are "+
			"unbounded and never refuse. Latencies are of requests answered 200, as the client measured them; "+
			"\"completed req/s\" counts those from the first send to the last answer; \"worker busy\" is their "+
			"query time per second and worker. One run per level and contender: a level has hundreds to thousands of "+
			"requests.", p.Workers, p.Task, p.ZipfS, p.MaxN, p.MeanN, p.Capacity, p.Level, p.QueueSize,
			time.Duration(p.QueueSize/p.Workers)*p.Task),
		Tables: []Table{t, bt, gt},
		Charts: []Chart{{File: absPath(chart), Alt: "open-loop p99 latency against offered load per contender"}},
		Notes:  []string{"The schedules: " + strings.Join(notes, "; ") + "."},
		Raw:    raw,
	}
	sec.Goals = append(sec.Goals, openLoopGoals(env, raw)...)
	return sec, nil
}

// openLoopGoals checks "throughput ≥ the best peer within noise, with a
// better p99" at every level, and bounded admission at the highest.
func openLoopGoals(env *Env, raw openLoopRaw) []Goal {
	rp, ok := raw.Results["reqpool"]
	if !ok {
		return nil
	}
	const noise = 0.05 // 5%: the spread of req/s between runs of one contender
	var (
		met      = true
		parts    []string
		worstLvl = -1 // the level where reqpool's p99 is furthest behind the best peer's
		worstGap float64
		worstPee string
	)
	for li, load := range raw.Params.Loads {
		r := rp[li]
		bestTP, bestP99, bestTPName, bestP99Name := 0.0, math.Inf(1), "", ""
		for _, f := range env.Contenders {
			if f.Name == "reqpool" {
				continue
			}
			q := raw.Results[f.Name][li]
			if q.Throughput > bestTP {
				bestTP, bestTPName = q.Throughput, f.Name
			}
			if float64(q.P99) < bestP99 {
				bestP99, bestP99Name = float64(q.P99), f.Name
			}
		}
		tpOK := r.Throughput >= (1-noise)*bestTP
		p99OK := float64(r.P99) < bestP99
		met = met && tpOK && p99OK
		if gap := float64(r.P99) / bestP99; !p99OK && gap > worstGap {
			worstLvl, worstGap, worstPee = li, gap, bestP99Name
		}
		parts = append(parts, fmt.Sprintf("%.0f%%: %.1f req/s vs %s %.1f, p99 %s vs %s %s ms%s", 100*load,
			r.Throughput, bestTPName, bestTP, fmtMs(float64(r.P99)), bestP99Name, fmtMs(bestP99), missMark(tpOK && p99OK)))
	}
	goals := []Goal{{Goal: "open-loop throughput ≥ the best peer (within 5%) with a better p99, at every load",
		Measured: strings.Join(parts, "; "), Met: met}}
	if worstLvl >= 0 {
		goals[0].Note = p99Diagnosis(raw, worstLvl, worstPee)
	}

	// "Quickly": a 503 within a few milliseconds. "Bounded": the admitted
	// requests' p99 does not grow with the overload's duration (second half
	// of the level against the first), where an unbounded queue's does.
	last := len(raw.Params.Loads) - 1
	r := rp[last]
	var peers []string
	for _, f := range env.Contenders {
		if f.Name != "reqpool" {
			q := raw.Results[f.Name][last]
			peers = append(peers, fmt.Sprintf("%s %s → %s", f.Name, fmtMs(float64(q.P99Early)), fmtMs(float64(q.P99Late))))
		}
	}
	growth := float64(r.P99Late) / float64(r.P99Early)
	goals = append(goals, Goal{
		Goal: fmt.Sprintf("at %.0f%% load, reject quickly (503) and keep the admitted p99 bounded", 100*raw.Params.Loads[last]),
		Measured: fmt.Sprintf("%s refused, 503 p99 %s ms; admitted p99 %s ms, first half → second half of the level %s → %s ms (peers: %s)",
			fmtPct(float64(r.Rejected)/float64(max(r.Sent, 1))), fmtMs(float64(r.RejectP99)), fmtMs(float64(r.P99)),
			fmtMs(float64(r.P99Early)), fmtMs(float64(r.P99Late)), strings.Join(peers, ", ")),
		Met: r.Rejected > 0 && float64(r.RejectP99) < 50 && growth <= 1.5,
	})
	return goals
}

// p99Diagnosis explains, from the run's own numbers, a p99 that is worse
// than a peer's at level li: which requests set it.
func p99Diagnosis(raw openLoopRaw, li int, peer string) string {
	r, q := raw.Results["reqpool"][li], raw.Results[peer][li]
	small, large := 0, len(sizeBuckets)-1
	return fmt.Sprintf("At %.0f%% load the requests that set reqpool's p99 are the largest: n %d–%d have p99 %s ms "+
		"against %s ms for %s, while n %d–%d have %s ms against %s ms. reqpool serves fewest remaining queries first, "+
		"aged by the pool's completed work (see the package documentation); a FIFO peer gives every size the same wait.",
		100*raw.Params.Loads[li], r.ByBucket[large].Lo, r.ByBucket[large].Hi, fmtMs(float64(r.ByBucket[large].P99)),
		fmtMs(float64(q.ByBucket[large].P99)), peer, r.ByBucket[small].Lo, r.ByBucket[small].Hi,
		fmtMs(float64(r.ByBucket[small].P99)), fmtMs(float64(q.ByBucket[small].P99)))
}

// missMark marks a level that misses its goal.
func missMark(ok bool) string {
	if ok {
		return ""
	}
	return " (**missed**)"
}

// openLoopOnce offers sched to a fresh server of f and measures the answers.
func openLoopOnce(ctx context.Context, f Factory, p openLoopParams, sched []arrival) (openLoopResult, error) {
	c, err := f.New(PoolConfig{Workers: p.Workers, QueueSize: p.QueueSize, MaxFanout: p.MaxN})
	if err != nil {
		return openLoopResult{}, err
	}
	s := newServer(c, p.Workers)
	defer s.Close()

	res := make([]clientResult, len(sched))
	var wg sync.WaitGroup
	start := time.Now()
	for i, a := range sched {
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(start.Add(a.At)))
		wg.Go(func() { res[i] = s.get(ctx, i, a.N, p.Task) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return openLoopResult{}, err
	}
	if !s.waitIdle(10 * time.Second) {
		return openLoopResult{}, fmt.Errorf("handlers still running after every answer: %w", errTimeout)
	}

	r := openLoopResult{Sent: len(sched), Offered: float64(len(sched)) / p.Level.Seconds()}
	var (
		ok, rej     []float64
		first, last = time.Duration(math.MaxInt64), time.Duration(0)
		busy        time.Duration
	)
	for _, cr := range res {
		first, last = min(first, cr.Sent), max(last, cr.Done)
		switch {
		case cr.Err == nil && cr.Status == http.StatusOK:
			ok = append(ok, ms(cr.Latency()))
			busy += time.Duration(cr.N) * p.Task
		case cr.Err == nil && cr.Status == http.StatusServiceUnavailable:
			rej = append(rej, ms(cr.Latency()))
		default:
			r.Failed++
		}
	}
	if r.Failed > 0 {
		return r, fmt.Errorf("%d of %d requests failed", r.Failed, len(sched))
	}
	r.OK, r.Rejected = len(ok), len(rej)
	r.P50, r.P99, r.Max = jsonFloat(percentile(ok, 50)), jsonFloat(percentile(ok, 99)), jsonFloat(maxOf(ok))
	r.RejectP99 = jsonFloat(percentile(rej, 99))
	r.Span = last - first
	r.Throughput = float64(r.OK) / r.Span.Seconds()
	r.Busy = busy.Seconds() / r.Span.Seconds() / float64(p.Workers)
	for _, b := range sizeBuckets {
		bs := bucketStats{Lo: b[0], Hi: b[1]}
		var lat []float64
		for _, cr := range res {
			if cr.N < b[0] || cr.N > b[1] || cr.Err != nil {
				continue
			}
			switch cr.Status {
			case http.StatusOK:
				lat = append(lat, ms(cr.Latency()))
			case http.StatusServiceUnavailable:
				bs.Rejected++
			}
		}
		bs.OK, bs.P50, bs.P99 = len(lat), jsonFloat(percentile(lat, 50)), jsonFloat(percentile(lat, 99))
		r.ByBucket = append(r.ByBucket, bs)
	}
	var early, late []float64
	for i, cr := range res {
		if cr.Err != nil || cr.Status != http.StatusOK {
			continue
		}
		if sched[i].At < p.Level/2 {
			early = append(early, ms(cr.Latency()))
		} else {
			late = append(late, ms(cr.Latency()))
		}
	}
	r.P99Early, r.P99Late = jsonFloat(percentile(early, 99)), jsonFloat(percentile(late, 99))
	return r, nil
}

// schedule returns the arrivals of a Poisson process of rate per second over
// d, with fan-outs drawn from the truncated Zipf distribution; the same seed
// gives the same schedule.
func schedule(seed uint64, rate float64, d time.Duration, s float64, maxN int) []arrival {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	zipf := rand.NewZipf(rng, s, 1, uint64(maxN-1)) // P(k) ∝ (1+k)^-s on 0..maxN-1, so n = k+1
	var out []arrival
	for at := time.Duration(0); ; {
		at += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if at >= d {
			return out
		}
		out = append(out, arrival{At: at, N: int(zipf.Uint64()) + 1})
	}
}

// zipfMean is the mean of P(n) ∝ n^-s on 1..maxN.
func zipfMean(s float64, maxN int) float64 {
	var num, den float64
	for n := 1; n <= maxN; n++ {
		w := math.Pow(float64(n), -s)
		num += float64(n) * w
		den += w
	}
	return num / den
}

// sizeHistogram summarises a schedule's fan-outs, for the report.
func sizeHistogram(sched []arrival) string {
	var ns []int
	for _, a := range sched {
		ns = append(ns, a.N)
	}
	slices.Sort(ns)
	if len(ns) == 0 {
		return "no requests"
	}
	return fmt.Sprintf("n: median %d, p90 %d, max %d", ns[len(ns)/2], ns[len(ns)*9/10], ns[len(ns)-1])
}
