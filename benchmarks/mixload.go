package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alitto/pond/v2"
)

// Mixed loads, for the scenarios of classes and flows (10 and 11): groups of
// clients that differ by path or by a tenant header, each closed loop (its
// clients send back to back) or open loop (one request every so often),
// through the real server. One group is the protected one (interactive
// users, the small tenant), whose latency and refusals the scenario is
// about; another is the load that crowds it out (batch, the big tenant).
//
// What a run measures, over a window that opens once the closed-loop
// clients have filled the queues: the requests each group sent in the
// window (answered 200, refused with 503), the protected group's
// latencies, the queries per second answered to each group, and how busy
// the pool was: the time queries spent on a database connection in the
// window (the simulated driver records when each began and ended), over
// Workers × the window.

// loadGroup is one kind of client of a mixed load.
type loadGroup struct {
	Name    string        // for tables and logs: "interactive", "batch", "A", "B"
	Path    string        // the request's path, which Classify may read
	Tenant  string        // the tenantHeader; "" for none
	N       int           // queries per request
	Clients int           // closed loop: clients that each send the next request once the last is answered
	Every   time.Duration // open loop (Clients 0): one request every Every from the window's start
}

// tenantHeader names a request's tenant in scenario 11.
const tenantHeader = "X-Tenant"

// mixParams sizes the runs of a mixed load.
type mixParams struct {
	Workers int
	// Task is every query's duration, and how long a closed-loop client
	// told 503 waits before its next request.
	Task   time.Duration
	Warm   time.Duration // the closed-loop clients run this long before the window opens
	Window time.Duration // requests sent, and query time spent, in the window are measured
}

// mixGroupResult is what one group's clients saw of the requests they sent
// in the window.
type mixGroupResult struct {
	Sent    int
	OK      int       // answered 200
	Refused int       // answered 503
	Lat     []float64 `json:",omitempty"` // ms, of those answered 200; the scenarios keep the protected group's only
	Queries float64   // queries answered 200 within the window, per second
}

// mixResult is one run.
type mixResult struct {
	Groups []mixGroupResult // in the order of the groups run
	Busy   float64          // query time on a connection in the window / (Workers × Window)
}

// mixOnce runs groups against c through a server for p.Warm + p.Window and
// returns what the window saw. It waits for every request of groups[keep]
// to be answered, and hangs up the other groups' requests at the window's
// end: they are not measured (nor counted as sent), and so need not drain
// the peers' unbounded queues. It closes c. A request that fails other
// than with 503, or by that hang-up, fails the run.
func mixOnce(ctx context.Context, c Contender, p mixParams, groups []loadGroup, keep int) (mixResult, error) {
	s := newServer(c, p.Workers)
	defer s.Close()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := s.rec.since() + p.Warm
	t1 := t0 + p.Window
	cutCtx, cut := context.WithCancel(runCtx) // the requests of the groups other than keep
	defer cut()
	cutTimer := time.AfterFunc(t1-s.rec.since(), cut)
	defer cutTimer.Stop()
	var (
		wg   sync.WaitGroup
		ids  atomic.Int64
		mu   sync.Mutex
		res  = make([][]clientResult, len(groups))
		fail error
	)
	send := func(gi int) clientResult {
		g := groups[gi]
		var h http.Header
		if g.Tenant != "" {
			h = http.Header{tenantHeader: {g.Tenant}}
		}
		rctx := runCtx
		if gi != keep {
			rctx = cutCtx
		}
		r := s.getAt(rctx, g.Path, h, int(ids.Add(1)), g.N, p.Task)
		if r.Err != nil && gi != keep && cutCtx.Err() != nil && runCtx.Err() == nil {
			return r // hung up at the window's end: not measured
		}
		mu.Lock()
		defer mu.Unlock()
		res[gi] = append(res[gi], r)
		if fail == nil && (r.Err != nil || (r.Status != http.StatusOK && r.Status != http.StatusServiceUnavailable)) {
			fail = fmt.Errorf("%s request %d: status %d, %v", g.Name, r.Req, r.Status, r.Err)
			cancel()
		}
		return r
	}
	for gi, g := range groups {
		if g.Clients > 0 {
			for range g.Clients {
				wg.Go(func() {
					for s.rec.since() < t1 && runCtx.Err() == nil {
						if r := send(gi); r.Status == http.StatusServiceUnavailable {
							sleepCtx(runCtx, p.Task)
						}
					}
				})
			}
			continue
		}
		wg.Go(func() {
			for k := 0; ; k++ {
				at := t0 + time.Duration(k)*g.Every
				if at >= t1 || !sleepCtx(runCtx, at-s.rec.since()) {
					return
				}
				wg.Go(func() { send(gi) })
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return mixResult{}, err
	}
	if fail != nil {
		return mixResult{}, fail
	}
	// The requests hung up may have left handlers, and their queries,
	// running: wait for them, so that every query's end is recorded.
	if !s.waitIdle(10 * time.Second) {
		return mixResult{}, fmt.Errorf("handlers still running 10s after the last answer: %w", errTimeout)
	}

	out := mixResult{Groups: make([]mixGroupResult, len(groups))}
	for gi, g := range groups {
		gr := &out.Groups[gi]
		answered := 0
		for _, r := range res[gi] {
			if r.Status == http.StatusOK && r.Done >= t0 && r.Done < t1 {
				answered++
			}
			if r.Sent < t0 || r.Sent >= t1 {
				continue
			}
			gr.Sent++
			switch r.Status {
			case http.StatusOK:
				gr.OK++
				gr.Lat = append(gr.Lat, ms(r.Latency()))
			case http.StatusServiceUnavailable:
				gr.Refused++
			}
		}
		gr.Queries = float64(answered*g.N) / p.Window.Seconds()
	}
	var busy time.Duration
	for _, ev := range s.rec.snapshot() {
		if ev.Began < 0 {
			continue
		}
		if lo, hi := max(ev.Began, t0), min(ev.Ended, t1); hi > lo {
			busy += hi - lo
		}
	}
	out.Busy = float64(busy) / float64(time.Duration(p.Workers)*p.Window)
	return out, nil
}

// sleepCtx sleeps for d or until ctx is done; it reports whether it slept
// the whole d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// mixRow is one row of a mixed-load table: a contender, configured for the
// row, and whether it runs the protected group alone (the reference row).
type mixRow struct {
	Name    string // the table's first cell, which names the contender
	Palette string // the contender's name, for its colour in the chart
	New     func() (Contender, error)
	Alone   bool
}

// mixSpec is a scenario of mixed loads.
type mixSpec struct {
	Name      string // the scenario's name, for logs
	Params    mixParams
	Groups    []loadGroup
	Protected int // the index in Groups of the group the goals protect
	Other     int // the index of the group that crowds it out
	Rows      []mixRow
	Chart     string // the chart's file name in the results directory
	Title     string // the chart's title
}

// mixRowStats sums up one row over the repetitions.
type mixRowStats struct {
	Name          string
	Sent, Refused int // the protected group's requests, over every repetition
	OtherSent     int // the other group's requests, over every repetition
	OtherRefused  int // of OtherSent, those refused
	// P50 and P99 are the medians over repetitions of each one's p50 and
	// p99 (ms) of the protected group's requests answered 200; Max is the
	// slowest of them in any repetition.
	P50, P99, Max float64
	Other         float64   // the other group's queries per second: the median over repetitions; NaN alone
	Busy          float64   // the median over repetitions
	Lat           []float64 // every repetition's protected latencies, for the chart
}

// mixRaw is the raw data of a mixed-load scenario.
type mixRaw struct {
	Params  mixParams
	Groups  []loadGroup
	Results map[string][]mixResult // by row name, one per repetition
}

// runMix runs every row of spec env.reps() times, rotating the rows' order
// per repetition as env.order does the contenders', and sums them up.
func runMix(ctx context.Context, env *Env, spec mixSpec) ([]mixRowStats, mixRaw, error) {
	raw := mixRaw{Params: spec.Params, Groups: spec.Groups, Results: map[string][]mixResult{}}
	for rep := range env.reps() {
		for i := range spec.Rows {
			row := spec.Rows[(i+rep)%len(spec.Rows)]
			if err := ctx.Err(); err != nil {
				return nil, raw, err
			}
			c, err := row.New()
			if err != nil {
				return nil, raw, fmt.Errorf("%s: %w", row.Name, err)
			}
			groups := spec.Groups
			if row.Alone {
				groups = []loadGroup{spec.Groups[spec.Protected]}
			}
			keep := spec.Protected
			if row.Alone {
				keep = 0
			}
			r, err := mixOnce(ctx, c, spec.Params, groups, keep)
			if err != nil {
				return nil, raw, fmt.Errorf("%s: %w", row.Name, err)
			}
			if row.Alone { // put the result in the order of spec.Groups
				full := mixResult{Groups: make([]mixGroupResult, len(spec.Groups)), Busy: r.Busy}
				full.Groups[spec.Protected] = r.Groups[0]
				r = full
			}
			for gi := range r.Groups {
				if gi != spec.Protected {
					r.Groups[gi].Lat = nil
				}
			}
			raw.Results[row.Name] = append(raw.Results[row.Name], r)
			pg := r.Groups[spec.Protected]
			env.Logf("  %s %-34s %s refused %d/%d, p99 %s ms; %s %.0f q/s; busy %s", spec.Name, row.Name,
				spec.Groups[spec.Protected].Name, pg.Refused, pg.Sent, fmtMs(percentile(pg.Lat, 99)),
				spec.Groups[spec.Other].Name, r.Groups[spec.Other].Queries, fmtPct(r.Busy))
		}
		env.Logf("  %s: repetition %d/%d done", spec.Name, rep+1, env.reps())
	}

	var stats []mixRowStats
	for _, row := range spec.Rows {
		st := mixRowStats{Name: row.Name}
		var other, busy, p50, p99 []float64
		for _, r := range raw.Results[row.Name] {
			pg := r.Groups[spec.Protected]
			st.Sent += pg.Sent
			st.Refused += pg.Refused
			st.Lat = append(st.Lat, pg.Lat...)
			if len(pg.Lat) > 0 {
				p50 = append(p50, percentile(pg.Lat, 50))
				p99 = append(p99, percentile(pg.Lat, 99))
			}
			if !row.Alone {
				og := r.Groups[spec.Other]
				other = append(other, og.Queries)
				st.OtherSent += og.Sent
				st.OtherRefused += og.Refused
			}
			busy = append(busy, r.Busy)
		}
		st.P50, st.P99, st.Max = median(p50), median(p99), maxOf(st.Lat)
		st.Other, st.Busy = median(other), median(busy)
		stats = append(stats, st)
	}
	return stats, raw, nil
}

// mixTable renders the rows' stats.
// runMixCharted runs spec (runMix) and draws its chart (mixChart).
func runMixCharted(ctx context.Context, env *Env, spec mixSpec) ([]mixRowStats, mixRaw, Chart, error) {
	stats, raw, err := runMix(ctx, env, spec)
	if err != nil {
		return nil, raw, Chart{}, err
	}
	chart, err := mixChart(env, spec, stats)
	return stats, raw, chart, err
}

// rowStats returns the stats of the row named name, or nil.
func rowStats(stats []mixRowStats, name string) *mixRowStats {
	if i := slices.IndexFunc(stats, func(s mixRowStats) bool { return s.Name == name }); i >= 0 {
		return &stats[i]
	}
	return nil
}

func mixTable(spec mixSpec, stats []mixRowStats) Table {
	p, o := spec.Groups[spec.Protected].Name, spec.Groups[spec.Other].Name
	t := Table{Header: []string{"contender", p + " refused", p + " p50 (ms)", p + " p99 (ms)", "p99 / query",
		p + " max (ms)", o + " queries/s", "pool busy"}}
	for _, st := range stats {
		t.Rows = append(t.Rows, []string{st.Name, fmt.Sprintf("%d of %d", st.Refused, st.Sent), fmtMs(st.P50),
			fmtMs(st.P99), fmtRatio(st.P99 / ms(spec.Params.Task)), fmtMs(st.Max), fmtFloat(st.Other), fmtPct(st.Busy)})
	}
	return t
}

// mixChart writes the strip chart of the protected group's latencies, with
// the goal of 2.5 query times marked, and returns it for the section.
func mixChart(env *Env, spec mixSpec, stats []mixRowStats) (Chart, error) {
	var rows []stripRow
	for i, st := range stats {
		r := stripRow{Name: st.Name, Palette: spec.Rows[i].Palette, Values: st.Lat, P50: st.P50, P95: st.P99}
		if st.Refused > 0 {
			r.Note = fmt.Sprintf("%d of %d refused", st.Refused, st.Sent)
		}
		rows = append(rows, r)
	}
	path := filepath.Join(env.Results, spec.Chart)
	p := spec.Groups[spec.Protected].Name
	err := writeStripChart(path, stripChart{
		Title:  spec.Title,
		XLabel: p + " latency (ms, log scale), all repetitions; | p50, ‖ p99: medians of repetitions",
		Rows:   rows,
		LogX:   true,
		Mark:   2.5 * ms(spec.Params.Task), MarkLabel: "goal: p99 ≤ 2.5 query times",
	})
	return Chart{File: absPath(path), Alt: p + " latency per contender"}, err
}

// ---- pond's subpools ----

// pondParts is pond's nearest to classes or tenants: one parent pool of
// Workers, and a subpool (pool.NewSubpool(cap)) per class or tenant,
// which caps how many of the parent's workers that part may use at once. A
// part with no cap submits to the parent directly. The request's part is
// found from the request, as reqpool's Classify finds its class; a request
// of no known part is an error. A cap is static: a part held at its cap
// does not take the workers the others leave idle, and each queue is FIFO.
type pondParts struct {
	parent pond.Pool
	parts  map[string]pond.Pool // nil: the parent itself
	key    func(*http.Request) string
}

// partKey is the context key of the request's part.
type partKey struct{}

// newPondParts builds the parent pool and a subpool for every part of caps
// with a cap above 0.
func newPondParts(workers int, caps map[string]int, key func(*http.Request) string) *pondParts {
	c := &pondParts{parent: pond.NewPool(workers), parts: map[string]pond.Pool{}, key: key}
	for k, n := range caps {
		c.parts[k] = nil
		if n > 0 {
			c.parts[k] = c.parent.NewSubpool(n)
		}
	}
	return c
}

func (c *pondParts) Name() string { return "pond" }

func (c *pondParts) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), partKey{}, c.key(r))))
	})
}

func (c *pondParts) Request(ctx context.Context) (context.Context, func()) { return ctx, func() {} }

func (c *pondParts) Fanout(ctx context.Context, tasks []Task) error {
	k, _ := ctx.Value(partKey{}).(string)
	p, ok := c.parts[k]
	if !ok {
		return fmt.Errorf("pond subpools: no part %q", k)
	}
	if p == nil {
		p = c.parent
	}
	g := p.NewGroupContext(ctx)
	gctx := g.Context()
	for _, t := range tasks {
		g.SubmitErr(func() error { return t(gctx) })
	}
	return g.Wait()
}

func (c *pondParts) Close() {
	for _, p := range c.parts {
		if p != nil {
			p.StopAndWait()
		}
	}
	c.parent.StopAndWait()
}
