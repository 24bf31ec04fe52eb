package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/reqpool/reqpool"
)

// Scenario 10, a batch flood (issue 10's first goal): 100 batch clients
// keep the pool full of one-query requests while interactive users send a
// Fanout of 4 every 80 ms. With one shared queue the batch work fills it and
// interactive requests are refused, or, with a queue large enough, wait
// behind it; with an interactive class of Share 4 and a batch class of
// Share 1 with its own queue of 64, interactive requests should be neither
// refused nor kept waiting, and the pool should stay busy.
func init() {
	register(Scenario{ID: 10, Name: "classes", Title: "Priority classes: interactive requests in a batch flood", Run: runClasses})
}

// classesRaw is the scenario's raw data.
type classesRaw struct {
	mixRaw
	Classes    []reqpool.Class // reqpool's, in the row with classes
	BatchQueue int             // the batch class's QueueSize, and the one queue's in the row without classes
}

func runClasses(ctx context.Context, env *Env) (*Section, error) {
	p := mixParams{Workers: 8, Task: 20 * time.Millisecond, Warm: 100 * time.Millisecond, Window: time.Second}
	batchClients, batchQueue := 100, 64
	if env.Quick {
		p.Task, p.Warm, p.Window = 5*time.Millisecond, 30*time.Millisecond, 200*time.Millisecond
		batchClients, batchQueue = 30, 16
	}
	inter := loadGroup{Name: "interactive", Path: "/interactive", N: 4, Every: 4 * p.Task}
	batch := loadGroup{Name: "batch", Path: "/batch", N: 1, Clients: batchClients}
	classes := []reqpool.Class{
		{Name: "interactive", Share: 4}, // QueueSize 0: Config.QueueSize, DefaultQueueSize here
		{Name: "batch", Share: 1, QueueSize: batchQueue},
	}
	classify := func(r *http.Request) (class, flow string) {
		if r.URL.Path == batch.Path {
			return "batch", ""
		}
		return "interactive", ""
	}
	withClasses := func() (Contender, error) {
		return newReqpoolWith(reqpool.Config{Workers: p.Workers, Classes: classes, Classify: classify})
	}
	// pond's nearest: batch in a subpool that leaves the interactive
	// Fanout its workers.
	batchCap := p.Workers - inter.N
	var (
		rows                                       []mixRow
		alone, oneQueue, bigQueue, after, subpools string
	)
	for _, f := range env.Contenders {
		switch f.Name {
		case "reqpool":
			alone = "interactive alone (reqpool)"
			oneQueue = fmt.Sprintf("reqpool, one queue of %d", batchQueue)
			bigQueue = fmt.Sprintf("reqpool, one queue of %d", reqpool.DefaultQueueSize)
			after = "reqpool, classes"
			rows = append(rows,
				mixRow{Name: alone, Palette: f.Name, New: withClasses, Alone: true},
				mixRow{Name: oneQueue, Palette: f.Name, New: func() (Contender, error) {
					return newReqpool(PoolConfig{Workers: p.Workers, QueueSize: batchQueue})
				}},
				mixRow{Name: bigQueue, Palette: f.Name, New: func() (Contender, error) {
					return newReqpool(PoolConfig{Workers: p.Workers})
				}},
				mixRow{Name: after, Palette: f.Name, New: withClasses})
		default:
			rows = append(rows, mixRow{Name: f.Name, Palette: f.Name, New: func() (Contender, error) {
				return f.New(PoolConfig{Workers: p.Workers})
			}})
			if f.Name == "pond" {
				subpools = fmt.Sprintf("pond, batch subpool of %d", batchCap)
				rows = append(rows, mixRow{Name: subpools, Palette: f.Name, New: func() (Contender, error) {
					return newPondParts(p.Workers, map[string]int{"interactive": 0, "batch": batchCap}, func(r *http.Request) string {
						c, _ := classify(r)
						return c
					}), nil
				}})
			}
		}
	}
	spec := mixSpec{
		Name: "classes", Params: p, Groups: []loadGroup{inter, batch}, Protected: 0, Other: 1, Rows: rows,
		Chart: "classes_interactive.svg",
		Title: fmt.Sprintf("Interactive requests (%d×%s every %s) in a flood of %d batch clients, Workers=%d",
			inter.N, p.Task, inter.Every, batch.Clients, p.Workers),
	}
	stats, raw, chart, err := runMixCharted(ctx, env, spec)
	if err != nil {
		return nil, err
	}
	get := func(name string) *mixRowStats { return rowStats(stats, name) }
	task := ms(p.Task)
	sec := &Section{
		Setup: fmt.Sprintf("Workers=%d; every query is the simulated one of %s (the `database/sql` driver that sleeps, as in "+
			"scenarios 2–5), through the real server. %d batch clients on `%s` each send a request of %d query as soon as "+
			"their last is answered, or %s after a 503; interactive users on `%s` send a request of %d queries every %s "+
			"whatever happens (open loop). The batch clients start %s before a window of %s opens. Measured, of the "+
			"requests sent in the window: the interactive ones refused (503), over all repetitions; the p50 and p99 of "+
			"the interactive ones answered, within each repetition (about %d requests, so its p99 is nearly its slowest) "+
			"and then the median over %d repetitions, with the slowest of any repetition beside them; the batch queries "+
			"answered per second; and how busy the pool was: the time queries spent on a database connection in the "+
			"window, from the driver's record of each query, over %d × the window (medians over repetitions). Batch "+
			"requests still unanswered when the window closes are hung up and not counted.\n\n"+
			"Rows: the interactive users alone on reqpool, for reference; reqpool without `Classes` or `Classify` (every "+
			"request in one class and one queue), with a queue of %d, the batch class's below, and with the default %d; "+
			"reqpool with `Classes` interactive (Share %d, QueueSize 0, that is `Config.QueueSize`: %d) and batch "+
			"(Share %d, QueueSize %d) and `Classify` by path, each request its own flow; each peer as it is, one shared "+
			"pool; and pond with the batch requests in a subpool of %d workers (`pool.NewSubpool(%d)`), the interactive "+
			"ones on the parent pool. Every row has the same %d batch clients (the issue's own figure for the larger "+
			"queue, 187 ms, was with 40).\n\n"+
			"Every query lasts exactly %s and the batch queue is never empty, so the %d workers turn over together, once "+
			"a round of %s: an interactive request that arrives mid-round waits for the round's end before its queries "+
			"start, since running queries are never preempted. So even first in line, it takes from 1 to 2 query times "+
			"and the server's overhead, depending on when in the round it arrives; with query times that vary, workers "+
			"would free up one by one, sooner.",
			p.Workers, p.Task, batch.Clients, batch.Path, batch.N, p.Task, inter.Path, inter.N, inter.Every, p.Warm, p.Window,
			int(p.Window/inter.Every), env.reps(), p.Workers,
			batchQueue, reqpool.DefaultQueueSize, classes[0].Share, reqpool.DefaultQueueSize, classes[1].Share, batchQueue,
			batchCap, batchCap, batch.Clients, p.Task, p.Workers, p.Task),
		Tables: []Table{mixTable(spec, stats)},
		Charts: []Chart{chart},
		Raw:    classesRaw{mixRaw: raw, Classes: classes, BatchQueue: batchQueue},
		Notes: []string{fmt.Sprintf("**The peers cannot express classes.** errgroup, `semaphore.Weighted`, pond and ants " +
			"have no notion of a class, a share or a per-class queue: every task waits in one queue that all requests " +
			"share (the semaphore's FIFO waiters, pond's FIFO queue, ants' handlers blocked in `Submit`) or races for the " +
			"database's connections (errgroup, whose order is random, hence its long tail), so an interactive query waits " +
			"behind the batch queries queued before it, and since those queues are unbounded nothing is refused (ants is " +
			"the slowest: its handler submits the 4 queries one at a time, each waiting its turn among the blocked batch " +
			"handlers). The nearest a user can build is a static partition: pond's subpools, which cap how many " +
			"of the parent's workers a part may use (the row above), or a semaphore per class written by hand, which " +
			"behaves alike here. It holds the interactive latency, but a cap is not a share: the batch part cannot use the " +
			"workers that the interactive part leaves idle, so the pool is only as busy as the interactive load keeps its " +
			"part, and the cap has to be tuned to one known interactive load (a larger batch cap leaves the interactive " +
			"Fanout fewer workers than queries, and it waits for them to turn over). reqpool's shares are " +
			"work-conserving: the batch class takes every worker that the interactive class does not want, and the " +
			"interactive class gets its share back as soon as running queries end, without preempting any.")},
	}
	if st := get(after); st != nil {
		var measured string
		if b := get(oneQueue); b != nil {
			measured = fmt.Sprintf("; without classes, one queue of %d: %d of %d", batchQueue, b.Refused, b.Sent)
		}
		sec.Goals = append(sec.Goals, Goal{Goal: "batch flood: 0 interactive requests refused",
			Measured: fmt.Sprintf("%d of %d%s", st.Refused, st.Sent, measured), Met: st.Sent > 0 && st.Refused == 0})

		measured = fmt.Sprintf("p99 %s ms = %.1f query times", fmtMs(st.P99), st.P99/task)
		if a := get(alone); a != nil {
			measured += fmt.Sprintf(" (interactive alone: %s ms", fmtMs(a.P99))
			if b := get(bigQueue); b != nil {
				measured += fmt.Sprintf("; without classes, one queue of %d: %s ms", reqpool.DefaultQueueSize, fmtMs(b.P99))
			}
			measured += ")"
		}
		sec.Goals = append(sec.Goals, Goal{Goal: fmt.Sprintf("batch flood: interactive p99 ≤ 2.5 query times (%s ms)", fmtMs(2.5*task)),
			Measured: measured, Met: st.P99 <= 2.5*task})

		measured = fmtPct(st.Busy)
		if s := get(subpools); s != nil {
			measured += fmt.Sprintf(" (%s: %s, interactive p99 %s ms)", subpools, fmtPct(s.Busy), fmtMs(s.P99))
		}
		sec.Goals = append(sec.Goals, Goal{Goal: "batch flood: pool ≥ 85% busy", Measured: measured, Met: st.Busy >= 0.85})
	}
	return sec, nil
}
