package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"
)

// Scenario 3, small behind large: one request of 160 queries arrives, then
// small requests of 2 queries keep arriving while it runs. A FIFO pool makes
// each small request wait for what is left of the large one, about 20 task
// times; reqpool should serve them within about 3.
func init() {
	register(Scenario{ID: 3, Name: "smalllarge", Title: "Small behind large", Run: runSmallLarge})
}

// smallLargeParams sizes the scenario.
type smallLargeParams struct {
	Workers    int
	LargeN     int           // queries of the large request
	SmallN     int           // queries of each small request
	Smalls     int           // number of small requests
	Task       time.Duration // every query's duration
	FirstSmall time.Duration // when the first small request is sent, after the large one
	Every      time.Duration // the gap between small requests
}

func (p smallLargeParams) largeAlone() time.Duration {
	return time.Duration((p.LargeN+p.Workers-1)/p.Workers) * p.Task
}

// smallLargeRaw is the raw data: per contender, per repetition, the small
// requests' latencies and the large one's, in milliseconds.
type smallLargeRaw struct {
	Params smallLargeParams
	Small  map[string][][]float64
	Large  map[string][]float64
}

func runSmallLarge(ctx context.Context, env *Env) (*Section, error) {
	p := smallLargeParams{Workers: 8, LargeN: 160, SmallN: 2, Smalls: 12, Task: 20 * time.Millisecond,
		FirstSmall: 10 * time.Millisecond, Every: 25 * time.Millisecond}
	if env.Quick {
		p.LargeN, p.Smalls, p.Task, p.FirstSmall, p.Every = 40, 4, 5*time.Millisecond, 3*time.Millisecond, 6*time.Millisecond
	}
	raw := smallLargeRaw{Params: p, Small: map[string][][]float64{}, Large: map[string][]float64{}}
	for rep := range env.reps() {
		for _, f := range env.order(rep) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			small, large, err := smallLargeOnce(ctx, f, p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Name, err)
			}
			raw.Small[f.Name] = append(raw.Small[f.Name], small)
			raw.Large[f.Name] = append(raw.Large[f.Name], large)
		}
		env.Logf("  smalllarge: repetition %d/%d done", rep+1, env.reps())
	}

	task := ms(p.Task)
	t := Table{Header: []string{"contender", "small p50 (ms)", "small p95 (ms)", "small max (ms)", "p95 / task",
		"large (ms)", "large / alone"}}
	var rows []stripRow
	for _, f := range env.Contenders {
		var p50, p95, mx, all []float64
		for _, lat := range raw.Small[f.Name] {
			p50 = append(p50, percentile(lat, 50))
			p95 = append(p95, percentile(lat, 95))
			mx = append(mx, maxOf(lat))
			all = append(all, lat...)
		}
		lg := median(raw.Large[f.Name])
		t.Rows = append(t.Rows, []string{f.Name, fmtMs(median(p50)), fmtMs(median(p95)), fmtMs(median(mx)),
			fmtRatio(median(p95) / task), fmtMs(lg), fmtRatio(lg / ms(p.largeAlone()))})
		rows = append(rows, stripRow{Name: f.Name, Values: all, P50: median(p50), P95: median(p95)})
	}

	chart := filepath.Join(env.Results, "small_behind_large.svg")
	if err := writeStripChart(chart, stripChart{
		Title:  fmt.Sprintf("Small requests (%d×%s) behind one of %d×%s, Workers=%d", p.SmallN, p.Task, p.LargeN, p.Task, p.Workers),
		XLabel: "small request latency (ms), every request of every repetition; | p50, ‖ p95",
		Rows:   rows,
		Mark:   3 * task, MarkLabel: "goal: 3 task times",
	}); err != nil {
		return nil, err
	}

	sec := &Section{
		Setup: fmt.Sprintf("Workers=%d. One request of %d×%s; %s later the first of %d small requests of %d×%s, then one "+
			"every %s. Client-measured latency of the small requests (p50, p95 and max within a repetition, then the "+
			"median over %d repetitions), and of the large one, also as a ratio to its time alone on an idle pool (%s). "+
			"A FIFO pool serves a small request only once every query of the large one queued before it has started.",
			p.Workers, p.LargeN, p.Task, p.FirstSmall, p.Smalls, p.SmallN, p.Task, p.Every, env.reps(), p.largeAlone()),
		Tables: []Table{t},
		Charts: []Chart{{File: absPath(chart), Alt: "small-behind-large latency distribution per contender"}},
		Raw:    raw,
	}
	var rp95 []float64
	for _, lat := range raw.Small["reqpool"] {
		rp95 = append(rp95, percentile(lat, 95))
	}
	if len(rp95) > 0 {
		v := median(rp95)
		measured := fmt.Sprintf("p95 %s ms = %.1f task times", fmtMs(v), v/task)
		for _, peer := range []string{"semaphore", "pond"} {
			var pp []float64
			for _, lat := range raw.Small[peer] {
				pp = append(pp, percentile(lat, 95))
			}
			if len(pp) > 0 {
				measured += fmt.Sprintf("; %s %.1f", peer, median(pp)/task)
			}
		}
		sec.Goals = append(sec.Goals, Goal{Goal: "small-behind-large p95 ≤ 3 task times", Measured: measured, Met: v <= 3*task})
	}
	return sec, nil
}

// smallLargeOnce runs the scenario once for f and returns the small
// requests' latencies and the large one's, in milliseconds.
func smallLargeOnce(ctx context.Context, f Factory, p smallLargeParams) ([]float64, float64, error) {
	c, err := f.New(PoolConfig{Workers: p.Workers, MaxFanout: p.LargeN})
	if err != nil {
		return nil, 0, err
	}
	s := newServer(c, p.Workers)
	defer s.Close()

	res := make([]clientResult, p.Smalls+1)
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() { res[0] = s.get(ctx, 0, p.LargeN, p.Task) })
	for i := 1; i <= p.Smalls; i++ {
		time.Sleep(time.Until(start.Add(p.FirstSmall + time.Duration(i-1)*p.Every)))
		wg.Go(func() { res[i] = s.get(ctx, i, p.SmallN, p.Task) })
	}
	wg.Wait()
	small := make([]float64, 0, p.Smalls)
	for _, r := range res {
		if r.Err != nil || r.Status != http.StatusOK {
			return nil, 0, fmt.Errorf("request %d: status %d, %v", r.Req, r.Status, r.Err)
		}
		if r.Req > 0 {
			small = append(small, ms(r.Latency()))
		}
	}
	return small, ms(res[0].Latency()), nil
}
