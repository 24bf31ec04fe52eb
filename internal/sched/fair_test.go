package sched

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// Scheduler tests for classes and flows, driven by hand as in
// sched_test.go: no goroutine, HTTP or clock.

// regIn registers a request in the class named class and its flow named
// flow.
func (s *Sched) regIn(t *testing.T, class, flow string) *request {
	t.Helper()
	c := s.Class(class)
	if c == nil {
		t.Fatalf("no class %q", class)
	}
	return s.register("", c, flow)
}

// classOwn returns how many queries each class executes, in order.
func (s *Sched) classOwn() []int {
	var own []int
	for _, c := range s.classes {
		own = append(own, c.running)
	}
	return own
}

// fill starts queries until no slot is free or nothing is ready, and
// returns the groups they belong to.
func (s *Sched) fill() []*Group {
	var gs []*Group
	for s.slots < s.cfg.Workers {
		g := s.next()
		if g == nil {
			break
		}
		gs = append(gs, g)
	}
	return gs
}

var twoClasses = []ClassConfig{{Name: "interactive", Share: 3}, {Name: "batch", Share: 1}}

func TestSchedClassShares(t *testing.T) {
	s := testSched(t, Config{Workers: 8, Classes: twoClasses})
	for range 20 {
		s.admitN(t, s.regIn(t, "batch", ""), 1) // batch came first
	}
	for range 5 {
		s.admitN(t, s.regIn(t, "interactive", ""), 4)
	}
	s.fill()
	if got, want := s.classOwn(), []int{6, 2}; !slices.Equal(got, want) {
		t.Fatalf("8 workers went %v to (interactive share 3, batch share 1), want %v", got, want)
	}
	// Each worker that frees up goes to the class furthest below its share,
	// so the split holds whichever class's query ends.
	for _, from := range []string{"interactive", "batch", "batch", "interactive"} {
		for _, g := range s.running() {
			if g.req.flow.class.name == from {
				s.done(g)
				break
			}
		}
		s.fill()
		if got, want := s.classOwn(), []int{6, 2}; !slices.Equal(got, want) {
			t.Fatalf("after a query of %s ended: %v, want %v", from, got, want)
		}
	}
}

// running returns one group per query executing, oldest first; test-only
// bookkeeping of what fill and next started.
func (s *Sched) running() []*Group {
	var gs []*Group
	for r := range s.requests {
		for g := r.liveGroups.head; g != nil; g = g.links[liveList].next {
			for range g.executing {
				gs = append(gs, g)
			}
		}
	}
	return gs
}

func TestSchedClassAloneUsesEveryWorker(t *testing.T) {
	s := testSched(t, Config{Workers: 4, Classes: twoClasses})
	s.admitN(t, s.regIn(t, "batch", ""), 10)
	s.fill()
	if got := s.classOwn(); !slices.Equal(got, []int{0, 4}) {
		t.Errorf("batch alone got %v of 4 workers, want all", got)
	}
	// Interactive arrives: executing batch queries are not preempted, and
	// every worker that frees up goes to interactive until it has its share.
	s.admitN(t, s.regIn(t, "interactive", ""), 10)
	for i, want := range [][]int{{1, 3}, {2, 2}, {3, 1}, {3, 1}} {
		var batch *Group
		for _, g := range s.running() {
			if g.req.flow.class.name == "batch" {
				batch = g
			}
		}
		s.done(batch)
		s.fill()
		if got := s.classOwn(); !slices.Equal(got, want) {
			t.Errorf("after %d batch completions: %v, want %v", i+1, got, want)
		}
	}
}

// TestSchedClassBound: a class with work and nothing executing starts a
// query within K starts (K classes), however large the others' shares:
// measured for every class at every start, with queries ending in a random
// order.
func TestSchedClassBound(t *testing.T) {
	classes := []ClassConfig{{Name: "a", Share: 1 << 20}, {Name: "b", Share: 1000}, {Name: "c", Share: 1}}
	for workers := 1; workers <= 4; workers++ {
		s := testSched(t, Config{Workers: workers, Classes: classes})
		for _, c := range classes {
			s.admitN(t, s.regIn(t, c.Name, ""), 100)
		}
		worst := s.idleBound(t, rand.New(rand.NewPCG(1, uint64(workers))), 250, func() []any {
			var idle []any
			for _, c := range s.classes {
				if c.running == 0 && c.ready.Len() > 0 {
					idle = append(idle, c)
				}
			}
			return idle
		}, func(g *Group) any { return g.req.flow.class })
		t.Logf("Workers=%d: at most %d starts", workers, worst)
		if worst > len(classes) {
			t.Errorf("Workers=%d: a class with work and nothing executing waited %d starts, want at most K = %d",
				workers, worst, len(classes))
		}
	}
}

// idleBound starts n queries, as slots allow, ending a random running one
// whenever all are busy. Before each start, idle lists who (a class, a
// flow) has work and nothing executing; who says whose the start is. It
// returns the most starts that anyone waited while idle, its own included.
func (s *Sched) idleBound(t *testing.T, rng *rand.Rand, n int, idle func() []any, who func(*Group) any) int {
	t.Helper()
	waited := map[any]int{}
	worst := 0
	var running []*Group
	for range n {
		if s.slots == s.cfg.Workers {
			k := rng.IntN(len(running))
			s.done(running[k])
			running = slices.Delete(running, k, k+1)
		}
		waiting := idle()
		g := s.next()
		if g == nil {
			t.Fatalf("nothing to start")
		}
		running = append(running, g)
		for x := range waited {
			if !slices.Contains(waiting, x) {
				delete(waited, x)
			}
		}
		for _, x := range waiting {
			waited[x]++
		}
		if w, ok := waited[who(g)]; ok {
			worst = max(worst, w)
			delete(waited, who(g))
		}
	}
	return worst
}

// TestSchedFlowsShareEqually: a flow with many requests and a flow with
// one get the same number of workers.
func TestSchedFlowsShareEqually(t *testing.T) {
	s := testSched(t, Config{Workers: 4})
	for range 10 {
		s.admitN(t, s.regIn(t, "", "A"), 2)
	}
	s.admitN(t, s.regIn(t, "", "B"), 8)
	byFlow := func() map[string]int {
		m := map[string]int{}
		for _, g := range s.running() {
			m[g.req.flow.name]++
		}
		return m
	}
	s.fill()
	if m := byFlow(); m["A"] != 2 || m["B"] != 2 {
		t.Fatalf("4 workers went %v, want 2 to each flow", m)
	}
	for range 6 {
		s.done(s.running()[0]) // any one
		s.fill()
		if m := byFlow(); m["A"] != 2 || m["B"] != 2 {
			t.Fatalf("after a completion: %v, want 2 to each flow", m)
		}
	}
}

// TestSchedFlowBound: a flow with work and nothing executing starts a
// query within F starts of its class (F flows with work), however many
// requests the others have.
func TestSchedFlowBound(t *testing.T) {
	const flows = 5
	for workers := 1; workers <= 4; workers++ {
		s := testSched(t, Config{Workers: workers, Classes: []ClassConfig{{QueueSize: 4096}}})
		for i := range flows {
			for range 3 + 20*i {
				s.admitN(t, s.regIn(t, "", fmt.Sprint("f", i)), 2)
			}
		}
		c := s.classes[0]
		worst := s.idleBound(t, rand.New(rand.NewPCG(2, uint64(workers))), 200, func() []any {
			var idle []any
			for _, f := range c.named {
				if f.running == 0 && f.ready.Len() > 0 {
					idle = append(idle, f)
				}
			}
			return idle
		}, func(g *Group) any { return g.req.flow })
		t.Logf("Workers=%d: at most %d starts", workers, worst)
		if worst > flows {
			t.Errorf("Workers=%d: a flow with work and nothing executing waited %d starts, want at most F = %d",
				workers, worst, flows)
		}
	}
}

// TestSchedFlowlessInsideClass: requests without a flow keep fewest
// remaining first among themselves, and together share their class with a
// named flow as one flow.
func TestSchedFlowlessInsideClass(t *testing.T) {
	s := testSched(t, Config{Workers: 2})
	big, small := s.regIn(t, "", ""), s.regIn(t, "", "")
	tenant := s.regIn(t, "", "T")
	s.admitN(t, big, 4)
	s.admitN(t, small, 1)
	s.admitN(t, tenant, 4)
	var order []string
	for g := s.next(); g != nil; g = s.next() {
		name := map[*request]string{big: "big", small: "small", tenant: "T"}[g.req]
		order = append(order, name)
		s.done(g)
	}
	// One worker at a time: the flowless set and T alternate; inside the
	// set, small (1 left) goes before big (4 left).
	want := []string{"small", "T", "big", "T", "big", "T", "big", "T", "big"}
	if !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
}

// TestSchedClassQueues: a full queue refuses its own class only.
func TestSchedClassQueues(t *testing.T) {
	s := testSched(t, Config{Workers: 2,
		Classes: []ClassConfig{{Name: "interactive", Share: 4, QueueSize: 100}, {Name: "batch", QueueSize: 3}}})
	s.admitN(t, s.regIn(t, "batch", ""), 5) // 2 free workers + 3
	s.fill()
	if ref, ok := s.fit(s.newGroup(t, s.regIn(t, "batch", ""), 1), false); ok || ref.Reason != RefusedQueueFull {
		t.Fatalf("batch beyond its QueueSize 3: %+v, want RefusedQueueFull", ref)
	}
	s.admitN(t, s.regIn(t, "interactive", ""), 100) // interactive's own queue
	st := []Counts{s.classes[0].counts, s.classes[1].counts}
	if st[0].Rejected != 0 || st[1].Rejected != 1 {
		t.Errorf("rejections %+v, want one for batch only", st)
	}
}

// TestSchedFlowRetiredLate: a query of a flow that was retired ends (one
// that a query's goroutine fanned out in a lent slot can outlive its
// request) after a new request of the same name made a new flow: the new
// flow stays.
func TestSchedFlowRetiredLate(t *testing.T) {
	s := testSched(t, Config{Workers: 1})
	c := s.classes[0]
	old := s.regIn(t, "", "tenant")
	g := s.admitN(t, old, 1)
	s.start(g, false) // in a lent slot: not counted in own
	s.unregister(old)
	if c.named["tenant"] != nil {
		t.Fatalf("the flow was not retired with its last request")
	}
	young := s.regIn(t, "", "tenant")
	s.finish(g, 0, nil, false, OutcomeOK)
	if c.named["tenant"] != young.flow {
		t.Errorf("the late end of the old flow's query forgot the new flow: %v", c.named)
	}
}

// TestSchedFlowsRetire: a named flow is forgotten once its last request is
// released and its last query has ended.
func TestSchedFlowsRetire(t *testing.T) {
	s := testSched(t, Config{Workers: 2})
	a, b := s.regIn(t, "", "tenant"), s.regIn(t, "", "tenant")
	s.admitN(t, a, 1)
	g := s.next()
	c := s.classes[0]
	s.unregister(a) // released while its query runs
	s.unregister(b)
	if c.named["tenant"] == nil {
		t.Fatalf("the flow was forgotten while its query ran")
	}
	s.done(g)
	if len(c.named) != 0 {
		t.Errorf("named flows after the last request ended: %v", c.named)
	}
}
