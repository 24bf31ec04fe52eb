package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario 7, memory: what a queued task costs, with 100k of them waiting
// behind blocked workers, and what an idle pool keeps.
func init() {
	register(Scenario{ID: 7, Name: "memory", Title: "Memory", Run: runMemory})
}

// memParams sizes the scenario.
type memParams struct {
	Workers   int
	Tasks     int // tasks submitted in all
	PerFanout int // tasks per Fanout call; one caller goroutine per call
}

// memResult is one contender's measurements (medians over repetitions).
type memResult struct {
	Tasks      int // tasks submitted
	Callers    int // Fanout calls, each on a goroutine of its own
	HeapPer    float64
	StackPer   float64
	TotalPer   float64 // heap and stacks, caller goroutines included
	PoolPer    float64 // TotalPer less the callers' own share (the baseline)
	GorPer     float64 // goroutines per task, caller goroutines included
	IdleNew    int64   // heap bytes after New
	IdleSteady int64   // heap bytes after a burst of work, once idle
	IdleGor    int     // goroutines the idle pool keeps
}

// memSample is one snapshot of the runtime after a full collection.
type memSample struct {
	Heap, Stack int64
	Goroutines  int
}

// sample collects garbage twice (finalizers and sync.Pool caches survive
// one) and reads the live heap, the stacks in use, and the goroutines.
func sample() memSample {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSample{Heap: int64(m.HeapAlloc), Stack: int64(m.StackInuse), Goroutines: runtime.NumGoroutine()}
}

func (a memSample) sub(b memSample) memSample {
	return memSample{Heap: a.Heap - b.Heap, Stack: a.Stack - b.Stack, Goroutines: a.Goroutines - b.Goroutines}
}

// memRaw is the raw data.
type memRaw struct {
	Params   memParams
	Baseline []memSample // the callers alone, per repetition
	Results  map[string]memResult
}

func runMemory(ctx context.Context, env *Env) (*Section, error) {
	p := memParams{Workers: 8, Tasks: 100_000, PerFanout: 64}
	if env.Quick {
		p.Tasks = 2_000
	}
	reps := min(env.reps(), 3)
	raw := memRaw{Params: p, Results: map[string]memResult{}}
	samples := map[string][]memResult{}
	for rep := range reps {
		base, err := queueMemory(ctx, nil, p)
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		raw.Baseline = append(raw.Baseline, base)
		for _, f := range env.order(rep) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r, err := memoryOnce(ctx, f, p, base)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Name, err)
			}
			samples[f.Name] = append(samples[f.Name], r)
		}
		env.Logf("  memory: repetition %d/%d done", rep+1, reps)
	}
	for name, rs := range samples {
		raw.Results[name] = medianMem(rs)
	}

	q := Table{
		Caption: fmt.Sprintf("With %s tasks waiting (%s Fanouts of %d, each from a goroutine of its own; Workers=%d, whose "+
			"tasks block until released):", fmtInt(int64(p.Tasks)), fmtInt(int64((p.Tasks+p.PerFanout-1)/p.PerFanout)), p.PerFanout, p.Workers),
		Header: []string{"contender", "heap B/task", "stack B/task", "total B/task (callers included)",
			"pool's own B/task", "goroutines/task"},
	}
	idle := Table{
		Caption: "An idle pool: the live heap after New, and after a burst of work (16 goroutines × 50 Fanouts of 8 " +
			"no-op tasks) once idle again, with the goroutines it keeps (each has a stack of 2 KiB or more, which " +
			"`StackInuse` is too coarse to show for a handful):",
		Header: []string{"contender", "heap after New (B)", "heap at steady state (B)", "goroutines kept"},
	}
	for _, f := range env.Contenders {
		r := raw.Results[f.Name]
		q.Rows = append(q.Rows, []string{f.Name, fmtFloat(r.HeapPer), fmtFloat(r.StackPer), fmtFloat(r.TotalPer),
			fmtFloat(r.PoolPer), fmt.Sprintf("%.3f", r.GorPer)})
		idle.Rows = append(idle.Rows, []string{f.Name, fmtInt(r.IdleNew), fmtInt(r.IdleSteady), fmt.Sprint(r.IdleGor)})
	}
	base := medianSample(raw.Baseline)
	sec := &Section{
		Setup: fmt.Sprintf("Measured in-process with `runtime.ReadMemStats` after two `runtime.GC()`: the live heap "+
			"(`HeapAlloc`) and the goroutine stacks (`StackInuse`), as growth over the state before, divided by the tasks. "+
			"Every task waits: %d execute and block, the rest are queued wherever the contender queues them (reqpool, "+
			"pond: the pool's queue; semaphore: a goroutine per task blocked in `Acquire`; errgroup: %d goroutines per "+
			"request blocked on the database, the rest in the caller's `g.Go`; ants: the caller blocked in `Submit`). "+
			"\"Pool's own\" subtracts a baseline of the same caller goroutines holding the same task slices, blocked "+
			"without a pool: %s B of heap and %s B of stack per task. A handler goroutine exists in a server whatever "+
			"the pool, so the goal is checked against the pool's own bytes. Medians of %d repetitions.",
			p.Workers, errgroupLimit, fmtFloat(float64(base.Heap)/float64(p.Tasks)), fmtFloat(float64(base.Stack)/float64(p.Tasks)), reps),
		Tables: []Table{q, idle},
		Raw:    raw,
	}
	if r, ok := raw.Results["reqpool"]; ok {
		sec.Goals = append(sec.Goals, Goal{Goal: "≤ 256 B per queued task",
			Measured: fmt.Sprintf("%s B of its own (%s B with the caller goroutines)", fmtFloat(r.PoolPer), fmtFloat(r.TotalPer)),
			Met:      r.PoolPer <= 256})
	}
	return sec, nil
}

// memoryOnce measures f: an idle pool, then one with p.Tasks waiting.
func memoryOnce(ctx context.Context, f Factory, p memParams, base memSample) (memResult, error) {
	before := sample()
	c, err := f.New(PoolConfig{Workers: p.Workers, QueueSize: p.Tasks, MaxFanout: p.PerFanout})
	if err != nil {
		return memResult{}, err
	}
	defer c.Close()
	afterNew := sample().sub(before)

	// A burst of work, so that whatever the pool keeps between bursts
	// (workers, caches) is there.
	var wg sync.WaitGroup
	noop := func(context.Context) error { return nil }
	for range 16 {
		wg.Go(func() {
			tasks := []Task{noop, noop, noop, noop, noop, noop, noop, noop}
			for range 50 {
				rctx, release := c.Request(ctx)
				_ = c.Fanout(rctx, tasks)
				release()
			}
		})
	}
	wg.Wait()
	steady := sample().sub(before)

	queued, err := queueMemory(ctx, c, p)
	if err != nil {
		return memResult{}, err
	}
	callers := (p.Tasks + p.PerFanout - 1) / p.PerFanout
	n := float64(p.Tasks)
	return memResult{
		Tasks:      p.Tasks,
		Callers:    callers,
		HeapPer:    float64(queued.Heap) / n,
		StackPer:   float64(queued.Stack) / n,
		TotalPer:   float64(queued.Heap+queued.Stack) / n,
		PoolPer:    float64(queued.Heap+queued.Stack-base.Heap-base.Stack) / n,
		GorPer:     float64(queued.Goroutines) / n,
		IdleNew:    afterNew.Heap,
		IdleSteady: steady.Heap,
		IdleGor:    steady.Goroutines,
	}, nil
}

// queueMemory submits p.Tasks blocking tasks to c, in Fanouts of
// p.PerFanout from goroutines of their own, waits until everything is
// queued, and returns the growth over the state before. With c nil, the
// callers block on their own with the same tasks instead: the baseline.
func queueMemory(ctx context.Context, c Contender, p memParams) (memSample, error) {
	gate := make(chan struct{})
	var running, calling atomic.Int64
	block := func(ctx context.Context) error {
		running.Add(1)
		defer running.Add(-1)
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return nil
	}
	before := sample()
	var wg sync.WaitGroup
	defer func() {
		close(gate)
		wg.Wait()
	}()
	callers := 0
	for left := p.Tasks; left > 0; left -= p.PerFanout {
		k := min(left, p.PerFanout)
		callers++
		wg.Go(func() {
			tasks := make([]Task, k)
			for i := range tasks {
				tasks[i] = block
			}
			if c == nil {
				rctx, cancel := context.WithCancel(ctx)
				defer cancel()
				calling.Add(1)
				select {
				case <-gate:
				case <-rctx.Done():
				}
				runtime.KeepAlive(tasks) // held like a pool would hold them
				return
			}
			rctx, release := c.Request(ctx)
			defer release()
			calling.Add(1)
			_ = c.Fanout(rctx, tasks)
		})
	}
	if err := settle(ctx, func() bool { return calling.Load() == int64(callers) }, &running); err != nil {
		return memSample{}, err
	}
	return sample().sub(before), nil
}

// settle waits until ready holds and then the goroutine count and the
// running tasks stop changing for a quarter of a second: every caller has
// queued what it will queue.
func settle(ctx context.Context, ready func() bool, running *atomic.Int64) error {
	deadline := time.Now().Add(60 * time.Second)
	var lastG, lastR int64 = -1, -1
	for stable := 0; stable < 5; {
		if time.Now().After(deadline) {
			return fmt.Errorf("tasks did not settle: %w", errTimeout)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
		g, r := int64(runtime.NumGoroutine()), running.Load()
		if ready() && g == lastG && r == lastR {
			stable++
		} else {
			stable = 0
		}
		lastG, lastR = g, r
	}
	return nil
}

// medianMem returns the field-wise median of rs.
func medianMem(rs []memResult) memResult {
	pick := func(get func(memResult) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = get(r)
		}
		return median(xs)
	}
	return memResult{
		Tasks:      rs[0].Tasks,
		Callers:    rs[0].Callers,
		HeapPer:    pick(func(r memResult) float64 { return r.HeapPer }),
		StackPer:   pick(func(r memResult) float64 { return r.StackPer }),
		TotalPer:   pick(func(r memResult) float64 { return r.TotalPer }),
		PoolPer:    pick(func(r memResult) float64 { return r.PoolPer }),
		GorPer:     pick(func(r memResult) float64 { return r.GorPer }),
		IdleNew:    int64(pick(func(r memResult) float64 { return float64(r.IdleNew) })),
		IdleSteady: int64(pick(func(r memResult) float64 { return float64(r.IdleSteady) })),
		IdleGor:    int(pick(func(r memResult) float64 { return float64(r.IdleGor) })),
	}
}

// medianSample returns the field-wise median of ss.
func medianSample(ss []memSample) memSample {
	h, s, g := make([]float64, len(ss)), make([]float64, len(ss)), make([]float64, len(ss))
	for i, x := range ss {
		h[i], s[i], g[i] = float64(x.Heap), float64(x.Stack), float64(x.Goroutines)
	}
	return memSample{Heap: int64(median(h)), Stack: int64(median(s)), Goroutines: int(median(g))}
}
