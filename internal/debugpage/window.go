package debugpage

import (
	"slices"
	"sync"
	"time"
)

// windowSize is how many of the latest queries a Window keeps.
const windowSize = 2048

// A Window keeps the queue wait and run time of the last 2,048 queries
// (windowSize) that ran, for the page's distributions. Its owner adds each
// query that ran (Add), and only those: the page says its distributions
// are of "the latest N queries that ran".
//
// Its memory is fixed (about 80 KB). Each Add is one short critical section
// under the Window's own mutex, never under the caller's locks; a read
// copies the samples under that mutex and works on the copy. The zero
// Window is empty and ready to use; a Window must not be copied after its
// first Add.
type Window struct {
	mu      sync.Mutex         // guards samples and total
	samples [windowSize]sample // a ring: the latest query's is at (total-1) % windowSize
	total   uint64             // queries kept since the Window was made
}

// sample is one query that ran.
type sample struct {
	wait, run time.Duration
	finished  time.Time
}

// Add keeps one query that ran: how long it waited in the queue, how long
// it ran, and when it finished. Once the Window is full, each Add drops the
// oldest query kept. It is safe for concurrent use.
func (w *Window) Add(wait, run time.Duration, finished time.Time) {
	s := sample{wait: wait, run: run, finished: finished}
	w.mu.Lock()
	w.samples[w.total%windowSize] = s
	w.total++
	w.mu.Unlock()
}

// read returns the kept samples' waits and run times, each sorted, and when
// the oldest kept query finished (zero when none is kept). The two slices
// have the same length, at most windowSize.
func (w *Window) read() (waits, runs []time.Duration, since time.Time) {
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
