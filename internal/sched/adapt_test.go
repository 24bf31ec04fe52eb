package sched

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// A database model for the adaptive limit, fed without a clock: each
// query's run time at a given number of queries at once.
type model func(running int, rng *rand.Rand) time.Duration

// cpuBound is a database of cores that time-shares queries of work each:
// up to cores at once they take work, past that work×running/cores. Each
// run time varies by ±20%.
func cpuBound(cores int, work time.Duration) model {
	return func(running int, rng *rand.Rand) time.Duration {
		d := work * time.Duration(max(running, cores)) / time.Duration(cores)
		return jitter(d, rng)
	}
}

// waitBound is a database whose queries wait (pg_sleep, a lock, I/O) for
// wait whatever their number.
func waitBound(wait time.Duration) model {
	return func(_ int, rng *rand.Rand) time.Duration { return jitter(wait, rng) }
}

func jitter(d time.Duration, rng *rand.Rand) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rng.Float64()))
}

// feed runs n windows' worth of samples of m through a, always at the
// limit in force (a closed loop with more demand than the limit), and
// returns the limits in force after each window. Its clock starts at the
// zero time plus a day and moves on by each run time over the limit: the
// rate at which a closed loop's queries end.
func feed(a *adaptive, m model, windows int, rng *rand.Rand) []int {
	var limits []int
	now := stamp(24 * time.Hour)
	if a.changed != 0 {
		now = a.changed + stamp(time.Hour)
	}
	for w := 0; w < windows; {
		l := a.current()
		rtt := m(l, rng)
		decided := a.windows
		a.sample(now, now+stamp(rtt), l)
		if a.windows != decided {
			limits = append(limits, a.current())
			w++
		}
		now += stamp(rtt / time.Duration(l))
	}
	return limits
}

// count returns how many of limits are l.
func count(limits []int, l int) int {
	n := 0
	for _, x := range limits {
		if x == l {
			n++
		}
	}
	return n
}

// within returns the first window from which every limit stays within
// [lo, hi], or -1.
func within(limits []int, lo, hi int) (from int) {
	from = -1
	for i, l := range limits {
		if l < lo || l > hi {
			from = -1
		} else if from < 0 {
			from = i
		}
	}
	return from
}

// TestAdaptiveFindsTheKnee: on a 2-core CPU-bound database of 4 ms
// queries, a limit starting at the ceiling of 64 comes down near the knee
// (2 at once keep both cores busy; alpha to beta more keep them busy
// across round trips) and stays there, probes included.
func TestAdaptiveFindsTheKnee(t *testing.T) {
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 1))
		a := newAdaptive(2, 64)
		limits := feed(a, cpuBound(2, 4*time.Millisecond), 120, rng)
		from := within(limits, 2, 12)
		t.Logf("seed %d: limits %v; within [2, 12] from window %d", seed, limits[:40], from)
		if from < 0 || from > 40 {
			t.Errorf("seed %d: the limit settled within [floor, 12] at window %d, want by 40: %v", seed, from, limits)
		}
		if a.limit < 4 || a.limit > 12 {
			t.Errorf("seed %d: ended at %d, want 4 to 12 (the knee is 2, plus alpha to beta)", seed, a.limit)
		}
	}
}

// TestAdaptiveGrowsForWaits: on a database whose queries wait rather than
// work, more at once cost nothing, and the limit grows to the ceiling.
func TestAdaptiveGrowsForWaits(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 1))
	a := newAdaptive(2, 64)
	a.limit = 2
	limits := feed(a, waitBound(20*time.Millisecond), 60, rng)
	if i := slices.Index(limits, 64); i < 0 || i > 12 || count(limits[i:], 64) < len(limits[i:])*3/4 {
		t.Errorf("reached the ceiling at window %d, want by 12, and to stay there but for probes: %v", i, limits)
	}
}

// TestAdaptiveSteps: wait, CPU, wait in a row, as the phases: the
// limit follows each step within a bounded number of windows.
func TestAdaptiveSteps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 1))
	a := newAdaptive(2, 64)
	wait, cpu := waitBound(20*time.Millisecond), cpuBound(2, 4*time.Millisecond)
	phases := []struct {
		name   string
		m      model
		lo, hi int
	}{{"wait", wait, 64, 64}, {"cpu", cpu, 2, 12}, {"wait", wait, 64, 64}}
	for _, p := range phases {
		limits := feed(a, p.m, 80, rng)
		from := within(limits, p.lo, p.hi)
		t.Logf("%s: within [%d, %d] from window %d: %v", p.name, p.lo, p.hi, from, limits[:min(30, len(limits))])
		if p.lo == p.hi {
			// The ceiling, between probes: count the windows at it.
			if n := count(limits[40:], p.hi); n < 30 {
				t.Errorf("%s: %d of the last 40 windows at %d: %v", p.name, n, p.hi, limits)
			}
			continue
		}
		if from < 0 || from > 40 {
			t.Errorf("%s: settled within [%d, %d] at window %d, want by 40: %v", p.name, p.lo, p.hi, from, limits)
		}
	}
}

// TestAdaptiveBounds: the limit never leaves [floor, ceiling], and grows
// only when the pool ran at its limit.
func TestAdaptiveBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	a := newAdaptive(3, 10)
	var now stamp
	for range 5000 {
		now += stamp(time.Hour) // each query starts after the last change
		a.sample(now, now+stamp(1+rng.IntN(1e7)), rng.IntN(12))
		if l := a.current(); l < 3 || l > 10 {
			t.Fatalf("limit %d outside [3, 10]", l)
		}
	}
	b := newAdaptive(2, 64)
	b.limit = 4
	for range 1000 {
		now += stamp(time.Hour)
		b.sample(now, now+stamp(20*time.Millisecond), 1) // one query at a time: no demand for more
	}
	if b.limit != 4 {
		t.Errorf("the limit moved to %d with one query at a time and flat run times, want 4 kept", b.limit)
	}
}

// TestAdaptiveAdmitsAtTheCeiling: the adaptive limit decides what runs,
// not what is admitted. With the limit down at 6 of 64 and a queue of 16,
// an idle pool admits a Fanout of 40, which counted against the limit
// (6 + 16) would be refused for as long as the limit stayed down; and
// requests keyed during a probe are keyed on the limit's scale, not the
// probe's.
func TestAdaptiveAdmitsAtTheCeiling(t *testing.T) {
	s := testSched(t, Config{Workers: 64, AdaptiveFloor: 2, Classes: []ClassConfig{{QueueSize: 16}}})
	s.adapt.limit = 6
	if ref, ok := s.fit(s.newGroup(t, s.reg(""), 40), false); !ok {
		t.Errorf("a Fanout of 40 on an idle adaptive pool at limit 6 of 64: refused, %+v", ref)
	}
	a, b := s.reg("a"), s.reg("b")
	s.admitN(t, a, 4)
	s.adapt.probing = true // the limit in force is 3 now
	s.admitN(t, b, 4)
	if a.key != 4*6 || b.key != 4*6 {
		t.Errorf("keys %d and %d of two requests of 4 at arrival 0, want both 4×6", a.key, b.key)
	}
}
