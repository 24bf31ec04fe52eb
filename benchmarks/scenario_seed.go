package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Scenario 2, the seed case: with 4 workers, two requests of 4 queries
// each. A bounded FIFO pool finishes them at 1× and 2× the query time,
// which is as good as it gets; a pool that shares workers evenly between
// requests finishes both at 2×.
func init() {
	register(Scenario{ID: 2, Name: "seed", Title: "Seed case: Workers=4, two requests of 4×T", Run: runSeed})
}

// seedRaw is the seed case's raw data: each request's latency per
// repetition, in milliseconds.
type seedRaw struct {
	T    time.Duration
	A, B map[string][]float64
}

func runSeed(ctx context.Context, env *Env) (*Section, error) {
	const (
		workers = 4
		n       = 4
		gap     = 5 * time.Millisecond // B is sent after A, so that "first" is well defined
	)
	T := 100 * time.Millisecond
	if env.Quick {
		T = 10 * time.Millisecond
	}
	raw := seedRaw{T: T, A: map[string][]float64{}, B: map[string][]float64{}}
	for rep := range env.reps() {
		for _, f := range env.order(rep) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			a, b, err := seedOnce(ctx, f, workers, n, T, gap)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Name, err)
			}
			raw.A[f.Name] = append(raw.A[f.Name], ms(a))
			raw.B[f.Name] = append(raw.B[f.Name], ms(b))
		}
		env.Logf("  seed: repetition %d/%d done", rep+1, env.reps())
	}

	t := Table{Header: []string{"contender", "request A (ms)", "A / T", "request B (ms)", "B / T", "mean / T"}}
	tm := ms(T)
	for _, f := range env.Contenders {
		a, b := median(raw.A[f.Name]), median(raw.B[f.Name])
		t.Rows = append(t.Rows, []string{f.Name, fmtMs(a), fmtRatio(a / tm), fmtMs(b), fmtRatio(b / tm), fmtRatio((a + b) / 2 / tm)})
	}
	return &Section{
		Setup: fmt.Sprintf("Workers=%d. Request A of %d×T, then request B of %d×T %s later, T=%s, through the server. "+
			"Each request's latency as the client measured it, median of %d repetitions. The best a bounded pool can do is "+
			"A at 1×T and B at 2×T (mean 1.5×T); sharing the workers evenly between the two gives 2×T for both. The errgroup "+
			"has no bound of its own: its 8 queries compete for the %d database connections, which database/sql hands out in "+
			"random order.", workers, n, n, gap, T, env.reps(), workers),
		Tables: []Table{t},
		Raw:    raw,
	}, nil
}

// seedOnce runs the seed case once for f and returns the latencies of A
// and B.
func seedOnce(ctx context.Context, f Factory, workers, n int, T, gap time.Duration) (a, b time.Duration, err error) {
	c, err := f.New(PoolConfig{Workers: workers})
	if err != nil {
		return 0, 0, err
	}
	s := newServer(c, workers)
	defer s.Close()
	var (
		wg  sync.WaitGroup
		res [2]clientResult
	)
	for i := range res {
		if i > 0 {
			time.Sleep(gap)
		}
		wg.Go(func() { res[i] = s.get(ctx, i, n, T) })
	}
	wg.Wait()
	for _, r := range res {
		if r.Err != nil || r.Status != http.StatusOK {
			return 0, 0, fmt.Errorf("request %d: status %d, %v", r.Req, r.Status, r.Err)
		}
	}
	return res[0].Latency(), res[1].Latency(), nil
}
