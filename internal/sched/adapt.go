package sched

import (
	"math"
	"time"
)

// adaptive moves a pool's limit between floor and ceiling from the run
// times of its queries, to find the database's knee: the fewest queries at
// once that keep it busy. Below the knee, more queries at once finish in
// the same time each; past it, they only wait inside the database, each
// taking longer, and the scheduler has nothing left to order.
//
// It reads no clock: the scheduler feeds it the queries' start and end
// times (sample) and it decides once per window of samples, so that a
// sequence of runs gives the same limits on any machine. The rule, per
// window:
//
//   - base is the mean run time of the latest window run at a lower limit:
//     a probe (one window at half the limit, not below the floor, every
//     8 to 32 windows; see decide for when, and when at a quarter), or a
//     window at the floor.
//     It stands for the run time with fewer queries at once, measured
//     lately: a baseline that is re-measured all the time cannot drift,
//     or outlive a change of workload, for long.
//   - queue = limit × (1 − base/mean) estimates how many of the limit's
//     queries wait inside the database rather than run: none when the
//     run time does not grow with the queries at once (queries that wait
//     on a sleep, a lock or I/O), limit − knee past the knee of a busy
//     database, where run time grows in proportion. It is Vegas's
//     estimate, on means rather than minimums: a minimum of noisy run
//     times sits below their mean and would show a queue in any noise.
//   - Above beta(limit), or when the run time grew in proportion to the
//     queries at once (linear), the limit shrinks to limit × base/mean
//     plus alpha: in one step to what the database served without
//     queueing.
//     Below alpha(limit), and only if the window ran at the limit (so that
//     more demand was there to use more), it grows by half: from 2 to a
//     ceiling of 64 in ten windows. In between it holds.
//
// Queries that failed or were cancelled are not fed: their run time says
// nothing of the database's pace (a cancelled query ends early). Nor are
// queries that started before the limit in force last changed (sample).
//
// Measured on this project's 2-core machine with real PostgreSQL
// (BenchmarkAdaptivePhases, Workers 64): 6 or 7 for CPU-bound queries,
// where a fixed 8 had the best small-request p99 of 2, 4, 6, 8 and 64,
// and 64 for queries that wait, each settled within about 1 s after the
// workload changed.
type adaptive struct {
	floor, ceiling int
	limit          int // in [floor, ceiling]

	// The window being filled.
	n         int           // samples
	sum       time.Duration // their total
	saturated bool          // some sample ended with the limit in force running
	probing   bool          // this window runs at half the limit (a quarter if deep)
	deep      bool          // the probe follows a shrink: a quarter of the limit

	windows  int           // windows decided
	unprobed int           // windows decided since the last probe
	interval int           // windows between probes now: probeEvery, doubled after each probe that the limit held through, up to maxInterval
	moved    bool          // the limit moved since the last probe
	last     time.Duration // the mean of the last window that was not a probe
	base     time.Duration // see above; 0 until the first probe or window at the floor
	changed  stamp         // when the limit in force last changed: queries started before ran under another
}

// probeEvery is how many windows pass between probes after the limit
// moved; while it holds, the interval doubles up to maxInterval, since a
// probe stops the database near its knee for a window, and a change of
// workload shows in the means (decide) without one.
const (
	probeEvery  = 8
	maxInterval = 4 * probeEvery
)

// linear is the ratio base/mean below which the run time grew in
// proportion to the queries at once, from the probe's to the limit's:
// both past the knee, so the limit's extra queries only waited. The
// estimate limit × base/mean is then no more than a bound on the knee, and
// the limit comes down to it (plus alpha) whatever beta says; a probe
// below the knee shows a ratio above, and only then does the band between
// alpha and beta hold the limit.
const linear = 0.6

// deepFrom is the least limit whose probe after a large shrink runs at a
// quarter of it: below, a quarter would stop a database near its knee for
// a window, for a step the half probe takes in two.
const deepFrom = 16

func newAdaptive(floor, ceiling int) *adaptive {
	return &adaptive{floor: floor, ceiling: ceiling, limit: ceiling, interval: probeEvery}
}

// windowSize is how many samples a window takes at the current limit: one
// per query slot, so that a window spans about a run time whatever the
// limit, and at least 16, so that a window's mean is not one slow query's.
func (a *adaptive) windowSize() int { return max(16, a.current()) }

// current returns the limit in force: during a probe, half the limit, or
// a quarter right after a shrink, not below the floor.
func (a *adaptive) current() int {
	switch {
	case a.probing && a.deep:
		return max(a.floor, a.limit/4)
	case a.probing:
		return max(a.floor, a.limit/2)
	}
	return a.limit
}

// sample feeds one query's run, from started to ended, which ended with
// running queries executing (itself included), and reports whether the
// limit in force changed. A query that started before the limit in force
// last changed ran, for some of its time, beside the queries of another
// limit, and is left out: a probe's window would otherwise fill with the
// queries of the limit it halved, which end first.
func (a *adaptive) sample(started, ended stamp, running int) bool {
	if started < a.changed {
		return false
	}
	a.n++
	a.sum += max(time.Duration(ended-started), 1)
	if running >= a.current() {
		a.saturated = true
	}
	if a.n < a.windowSize() {
		return false
	}
	before := a.current()
	a.decide()
	if a.current() == before {
		return false
	}
	a.changed = ended
	return true
}

// decide ends a window: a probe's, or one at the floor, sets base; any
// but a probe's moves the limit by the rule above (at the floor, base is
// the window's own mean: no queue, so it grows if there was demand). The
// next window is a probe after interval windows; right after a shrink,
// which may have left the limit still past the knee (at a quarter of the
// limit after a large shrink to deepFrom or more, so that each probe
// quarters what is left to find); and after a hold with a queue showing
// whose mean moved by half, which a stale base can make up.
func (a *adaptive) decide() {
	mean := a.sum / time.Duration(a.n)
	probed, saturated := a.probing, a.saturated
	a.windows++
	a.n, a.sum, a.saturated, a.probing = 0, 0, false, false
	if probed || a.limit == a.floor || a.base == 0 {
		a.base = mean
	}
	if probed {
		a.unprobed = 0
		a.interval = probeEvery
		if !a.moved {
			a.interval = min(2*a.interval, maxInterval)
		}
		a.moved = false
		return
	}
	a.unprobed++
	// A mean half again or two thirds the last one's, at a limit that
	// held, is a change of workload: the base may be the old workload's,
	// and only a probe tells.
	changed := a.last > 0 && (mean > a.last*3/2 || mean < a.last*2/3)
	a.last = mean
	soon, deep := false, false
	l, ratio := float64(a.limit), min(1, float64(a.base)/float64(mean))
	switch queue := l * (1 - ratio); {
	case queue > beta(l) || ratio < linear:
		before := a.limit
		a.set(min(a.limit, int(l*ratio+alpha(l)+0.5)))
		if a.limit < before {
			// Past the knee still, maybe: probe at once; and deep when
			// the limit came down by more than a third, so that a limit
			// far above the knee comes down in a few steps.
			soon = true
			deep = a.limit*3 < before*2 && a.limit >= deepFrom
		}
	case queue < alpha(l) && saturated:
		a.set(a.limit + max(1, a.limit/2))
	case queue >= alpha(l):
		soon = changed // held, with a queue showing
	}
	a.probing = (soon || a.unprobed >= a.interval) && a.limit > a.floor
	a.deep = deep
}

// alpha and beta bound the queries that may wait inside the database at
// limit l: below alpha there is room to grow, above beta the limit
// shrinks. They are Vegas's, 3·log10(l) and 6·log10(l), but at least 4
// and 8: a query's run time, as the pool sees it, includes its round trip
// and the driver's work, during which the database does not run it, and a
// limit some queries past the knee keeps the database busy across them
// (on this project's machine, a fixed limit of 8 served CPU-bound queries
// faster than one of 4, whose run times were already twice the knee's).
func alpha(l float64) float64 { return max(4, 3*math.Log10(l)) }
func beta(l float64) float64  { return max(8, 6*math.Log10(l)) }

// set puts the limit at n, within [floor, ceiling].
func (a *adaptive) set(n int) {
	n = min(a.ceiling, max(a.floor, n))
	a.moved = a.moved || n != a.limit
	a.limit = n
}
