package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Scenario 4, wasted work: a request of 80 long queries whose client hangs
// up early. Whatever starts after the hang-up is work nobody will read.
func init() {
	register(Scenario{ID: 4, Name: "hangup", Title: "Wasted work after a hang-up", Run: runHangUp})
}

// hangUpParams sizes the scenario.
type hangUpParams struct {
	Workers int
	N       int           // queries of the request
	Task    time.Duration // each query's duration
	HangUp  time.Duration // when the client hangs up, after sending
}

// hangUpRun is one repetition's measurements for one contender.
type hangUpRun struct {
	CalledBefore int           // tasks called before the client hung up
	CalledAfter  int           // tasks called after it, or with their context already done
	BeganAfter   int           // queries that reached the database after it
	IdleAfter    time.Duration // from the client hanging up until nothing of the request ran
	Noticed      time.Duration // from the client hanging up until the server's AfterFunc on the request context ran
}

// hangUpRaw is the raw data.
type hangUpRaw struct {
	Params hangUpParams
	Runs   map[string][]hangUpRun
}

func runHangUp(ctx context.Context, env *Env) (*Section, error) {
	p := hangUpParams{Workers: 4, N: 80, Task: 100 * time.Millisecond, HangUp: 150 * time.Millisecond}
	if env.Quick {
		p.N, p.Task, p.HangUp = 16, 20*time.Millisecond, 30*time.Millisecond
	}
	raw := hangUpRaw{Params: p, Runs: map[string][]hangUpRun{}}
	for rep := range env.reps() {
		for _, f := range env.order(rep) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r, err := hangUpOnce(ctx, f, p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Name, err)
			}
			raw.Runs[f.Name] = append(raw.Runs[f.Name], r)
		}
		env.Logf("  hangup: repetition %d/%d done", rep+1, env.reps())
	}

	t := Table{Header: []string{"contender", "tasks called before hang-up", "tasks called after", "queries begun after",
		"idle after hang-up (ms)", "context.AfterFunc ran after (ms)"}}
	for _, f := range env.Contenders {
		runs := raw.Runs[f.Name]
		col := func(get func(hangUpRun) float64) float64 {
			var xs []float64
			for _, r := range runs {
				xs = append(xs, get(r))
			}
			return median(xs)
		}
		t.Rows = append(t.Rows, []string{f.Name,
			fmtFloat(col(func(r hangUpRun) float64 { return float64(r.CalledBefore) })),
			fmtFloat(col(func(r hangUpRun) float64 { return float64(r.CalledAfter) })),
			fmtFloat(col(func(r hangUpRun) float64 { return float64(r.BeganAfter) })),
			fmtMs(col(func(r hangUpRun) float64 { return ms(r.IdleAfter) })),
			fmtMs(col(func(r hangUpRun) float64 { return ms(r.Noticed) })),
		})
	}
	sec := &Section{
		Setup: fmt.Sprintf("Workers=%d. One request of %d×%s; its client hangs up %s after sending it. Times are from the "+
			"moment the client cancelled its request (the server's view of it comes a fraction of a millisecond later, "+
			"over loopback; the last column is when a `context.AfterFunc` on the request context ran, an upper bound). "+
			"\"Tasks called after\" counts the task functions the library still called after the hang-up or with their "+
			"context already done; \"queries begun after\" those whose query reached the database (a task called with "+
			"a done context returns at once, as database/sql checks the context before taking a connection). "+
			"\"Idle after hang-up\" is the time until the handler returned and the last task ended, after which nothing "+
			"of the request runs or is queued. Medians of %d repetitions.",
			p.Workers, p.N, p.Task, p.HangUp, env.reps()),
		Tables: []Table{t},
		Raw:    raw,
	}
	if runs := raw.Runs["reqpool"]; len(runs) > 0 {
		worst, idle := 0, []float64{}
		for _, r := range runs {
			worst = max(worst, r.CalledAfter, r.BeganAfter)
			idle = append(idle, ms(r.IdleAfter))
		}
		sec.Goals = append(sec.Goals, Goal{Goal: "0 tasks started after a hang-up",
			Measured: fmt.Sprintf("at most %d in %d repetitions; pool idle %s ms after the hang-up (median)",
				worst, len(runs), fmtMs(median(idle))),
			Met: worst == 0})
	}
	return sec, nil
}

// hangUpOnce runs the scenario once for f.
func hangUpOnce(ctx context.Context, f Factory, p hangUpParams) (hangUpRun, error) {
	c, err := f.New(PoolConfig{Workers: p.Workers, MaxFanout: p.N})
	if err != nil {
		return hangUpRun{}, err
	}
	s := newServer(c, p.Workers)
	defer s.Close()

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var clientHangUp time.Duration
	hung := make(chan struct{})
	timer := time.AfterFunc(p.HangUp, func() {
		clientHangUp = s.rec.since()
		close(hung)
		cancel()
	})
	defer timer.Stop()
	res := s.get(rctx, 0, p.N, p.Task)
	if res.Err == nil {
		return hangUpRun{}, fmt.Errorf("the request finished (status %d) before the client hung up", res.Status)
	}
	<-hung
	// With no cancellation at all the request would take N/Workers task times.
	if !s.waitIdle(time.Duration(p.N/p.Workers+2)*p.Task + 5*time.Second) {
		return hangUpRun{}, fmt.Errorf("handler still running: %w", errTimeout)
	}
	sr, ok := s.request(0)
	if !ok || sr.HangUp < 0 {
		return hangUpRun{}, fmt.Errorf("the server never saw the hang-up (%+v)", sr)
	}
	// The client's hang-up is the reference: the server's AfterFunc runs on
	// a goroutine of its own, which on a busy machine may be scheduled after
	// the library has already reacted to the cancellation (and called tasks
	// with a done context). A task's own view of its context settles the
	// order where the clocks cannot.
	ref := clientHangUp
	r := hangUpRun{Noticed: sr.HangUp - ref}
	last := sr.Done
	for _, ev := range s.rec.snapshot() {
		if ev.Called > ref || ev.CtxDoneAtCall {
			r.CalledAfter++
		} else {
			r.CalledBefore++
		}
		if ev.Began > ref {
			r.BeganAfter++
		}
		last = slices.Max([]time.Duration{last, ev.Ended})
	}
	r.IdleAfter = last - ref
	return r, nil
}
