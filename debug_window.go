package reqpool

import (
	"context"
	"slices"
	"sync"
	"time"
)

// windowSize is how many of the latest queries a window keeps.
const windowSize = 2048

// A window is the Observer behind Pool.DebugHandler: it keeps the queue wait
// and run time of the last windowSize queries that ran, for the debug page's
// distributions. Dropped queries never ran and are not kept (Stats.Dropped
// counts them), nor are refused Fanouts (Stats.Rejected).
//
// Its memory is fixed (about 80 KB). Each query costs it one short critical
// section under its own mutex, never under the scheduler's; a read copies
// the samples under that mutex and works on the copy.
type window struct {
	mu      sync.Mutex
	samples [windowSize]sample // a ring: the latest query's is at (total-1) % windowSize
	total   uint64             // queries kept since the window was made
}

// sample is one query that ran.
type sample struct {
	wait, run time.Duration
	finished  time.Time
}

// QueryDone implements Observer.
func (w *window) QueryDone(_ context.Context, rec QueryRecord) {
	if rec.Started.IsZero() {
		return // dropped
	}
	s := sample{wait: rec.Wait(), run: rec.Run(), finished: rec.Finished}
	w.mu.Lock()
	w.samples[w.total%windowSize] = s
	w.total++
	w.mu.Unlock()
}

// Refused implements Observer; Stats.Rejected counts refusals.
func (w *window) Refused(context.Context, Refusal) {}

// read returns the kept samples' waits and run times, each sorted, and when
// the oldest kept query finished (zero when none is kept). The two slices
// have the same length, at most windowSize.
func (w *window) read() (waits, runs []time.Duration, since time.Time) {
	w.mu.Lock()
	n := int(min(w.total, windowSize))
	kept := make([]sample, n)
	copy(kept, w.samples[:n])
	oldest := 0
	if w.total > windowSize {
		oldest = int(w.total % windowSize)
	}
	w.mu.Unlock()
	if n == 0 {
		return nil, nil, time.Time{}
	}
	waits, runs = make([]time.Duration, n), make([]time.Duration, n)
	for i, s := range kept {
		waits[i], runs[i] = s.wait, s.run
	}
	slices.Sort(waits)
	slices.Sort(runs)
	return waits, runs, kept[oldest].finished
}

// nearestRank returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample that at least p% of all samples
// are no greater than. It returns 0 for no samples.
func nearestRank(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (p*n + 99) / 100 // ceil(p×n / 100), from 1
	return sorted[min(max(rank, 1), n)-1]
}
