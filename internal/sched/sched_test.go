package sched

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests drive the scheduler by hand, with no goroutine, HTTP or clock:
// admit groups, pop queries as a slot holder would, finish them, and check
// the order and the counts.

// testSched returns a scheduler for cfg, with reqpool's defaults for what
// it leaves zero: one class; a class's Share 1 and QueueSize 1024.
func testSched(t *testing.T, cfg Config) *Sched {
	t.Helper()
	if len(cfg.Classes) == 0 {
		cfg.Classes = []ClassConfig{{}}
	}
	cfg.Classes = slices.Clone(cfg.Classes)
	for i := range cfg.Classes {
		c := &cfg.Classes[i]
		c.Share = cmp.Or(c.Share, 1)
		c.QueueSize = cmp.Or(c.QueueSize, 1024)
		c.MaxFanout = cfg.Workers + c.QueueSize
	}
	cfg.Panicked = func(v any) error { return fmt.Errorf("panic: %v", v) }
	cfg.Failed = func(i int, err, cause error) error { return fmt.Errorf("query %d: %w", i, err) }
	return New(cfg)
}

// noWork is the Work of the groups these tests admit: queries that do
// nothing, and nobody told.
type noWork struct{}

func (noWork) Run(context.Context, int) error { return nil }
func (noWork) Ended(int, Event)               {}

// reg registers a flowless request of the first class.
func (s *Sched) reg(id string) *request { return s.register(id, s.classes[0], "") }

// newGroup returns an unadmitted group of n no-op queries for r, cancelled
// when the test ends.
func (s *Sched) newGroup(t *testing.T, r *request, n int) *Group {
	g := new(Group)
	s.Init(g, context.Background(), noWork{}, n, false)
	g.req = r
	t.Cleanup(func() { g.cancel(nil) })
	return g
}

// admitN admits a group of n no-op queries for r and returns it.
func (s *Sched) admitN(t *testing.T, r *request, n int) *Group {
	t.Helper()
	g := s.newGroup(t, r, n)
	if ref, ok := s.fit(g, false); !ok {
		t.Fatalf("admit %d: %+v", n, ref)
	}
	s.enqueue(g)
	return g
}

// next pops the next query as a slot holder would, or returns nil.
func (s *Sched) next() *Group {
	s.slots++
	g, _ := s.pop()
	if g == nil {
		s.slots--
	}
	return g
}

// done finishes one query of g and gives its slot back.
func (s *Sched) done(g *Group) {
	s.finish(g, 0, nil, true, OutcomeOK)
	s.slots--
}

// order pops and finishes queries one at a time until none is left and
// returns, for each, which of reqs it belonged to.
func (s *Sched) order(reqs ...*request) []int {
	var out []int
	for g := s.next(); g != nil; g = s.next() {
		for i, r := range reqs {
			if g.req == r {
				out = append(out, i)
			}
		}
		s.done(g)
	}
	return out
}

func TestSchedFewestRemainingFirst(t *testing.T) {
	s := testSched(t, Config{Workers: 4})
	big, small := s.reg(""), s.reg("")
	s.admitN(t, big, 5)
	s.admitN(t, small, 2)
	if got, want := s.order(big, small), []int{1, 1, 0, 0, 0, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v: the request with fewer queries left goes first", got, want)
	}
}

func TestSchedTiesFirstRegisteredFirst(t *testing.T) {
	s := testSched(t, Config{Workers: 4})
	a, b := s.reg(""), s.reg("")
	s.admitN(t, b, 2) // admitted first, registered second
	s.admitN(t, a, 2)
	// Equal keys: a (registered first) goes first; after its first query it
	// has fewer left, so it finishes first.
	if got, want := s.order(a, b), []int{0, 0, 1, 1}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

// TestSchedAging: a request's key is its arrival on the completion clock
// plus its remaining queries × Workers, so a small request that arrives
// later overtakes a larger one only while its key is the smaller.
func TestSchedAging(t *testing.T) {
	for _, tc := range []struct {
		completed uint64 // completions between the two arrivals
		want      []int  // the order of old (0) and young (1)
	}{
		{3, []int{1, 0, 0, 0}}, // young's key 3+2 = 5 < old's 0+6
		{7, []int{0, 0, 0, 1}}, // young's key 7+2 = 9 > old's 6: old has aged
	} {
		s := testSched(t, Config{Workers: 2})
		old := s.reg("")
		s.admitN(t, old, 3) // arrival 0: key 0 + 3×2 = 6
		old.flow.completed += tc.completed
		young := s.reg("")
		s.admitN(t, young, 1)
		if got := s.order(old, young); !slices.Equal(got, tc.want) {
			t.Errorf("%d completions apart: order %v, want %v", tc.completed, got, tc.want)
		}
	}
}

func TestSchedPerRequestCap(t *testing.T) {
	s := testSched(t, Config{Workers: 4, PerRequest: 1})
	a, b := s.reg(""), s.reg("")
	s.admitN(t, a, 3)
	s.admitN(t, b, 3)
	g1 := s.next()
	g2 := s.next()
	if g1 == nil || g2 == nil || g1.req == g2.req {
		t.Fatalf("two free slots took %v and %v, want one query of each request", g1, g2)
	}
	if g := s.next(); g != nil {
		t.Fatalf("a third query started with PerRequest 1 and both requests running")
	}
	s.done(g1)
	if g := s.next(); g == nil || g.req != g1.req {
		t.Errorf("after a query of a request ended, its next query must be ready")
	}
}

func TestSchedDropsCancelled(t *testing.T) {
	s := testSched(t, Config{Workers: 1})
	a, b := s.reg(""), s.reg("")
	ga := s.admitN(t, a, 2)
	s.admitN(t, b, 3)
	ga.cancel(context.Canceled)
	if got := s.order(a, b); !slices.Equal(got, []int{1, 1, 1}) {
		t.Errorf("order %v: the cancelled group's queries must never start", got)
	}
	if s.classes[0].counts.Dropped != 2 || s.queued != 0 || ga.pending != 0 || !ga.dropped {
		t.Errorf("dropped %d, queued %d, pending %d: want 2, 0, 0", s.classes[0].counts.Dropped, s.queued, ga.pending)
	}
}

func TestSchedQueueFull(t *testing.T) {
	s := testSched(t, Config{Workers: 2, Classes: []ClassConfig{{QueueSize: 3}}})
	r := s.reg("")
	s.admitN(t, r, 5) // 2 free slots + 3 queue places
	ref, ok := s.fit(s.newGroup(t, r, 1), false)
	want := Refusal{Reason: RefusedQueueFull, Queries: 1, Queued: 5, QueueSize: 3, Free: 2}
	if ok || ref != want || s.classes[0].counts.Rejected != 1 || s.queued != 5 {
		t.Errorf("admit into a full queue: %+v, %v, rejected %d, queued %d; want %+v", ref, ok, s.classes[0].counts.Rejected, s.queued, want)
	}
}
