package reqpool

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
)

// These tests drive the scheduler by hand, with no goroutine, HTTP or clock:
// admit groups, pop queries as a slot holder would, finish them, and check
// the order and the counts.

// testSched returns a scheduler for cfg (defaults filled in).
func testSched(t *testing.T, cfg Config) *sched {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return newSched(cfg)
}

// reg registers a flowless request of the first class.
func (s *sched) reg(id string) *request { return s.register(id, s.classes[0], "") }

// admitN admits a group of n no-op queries for r and returns it.
func (s *sched) admitN(t *testing.T, r *request, n int) *group {
	t.Helper()
	g := &group{sched: s, req: r, queries: repeat(n, Func(noop))}
	g.Context, g.cancel = context.WithCancelCause(context.Background())
	t.Cleanup(func() { g.cancel(nil) })
	if err := s.admit(g, false); err != nil {
		t.Fatalf("admit %d: %v", n, err)
	}
	return g
}

// next pops the next query as a slot holder would, or returns nil.
func (s *sched) next() *group {
	s.slots++
	g, _ := s.pop()
	if g == nil {
		s.slots--
	}
	return g
}

// done finishes one query of g and gives its slot back.
func (s *sched) done(g *group) {
	s.finish(g, 0, nil, true, false)
	s.slots--
}

// order pops and finishes queries one at a time until none is left and
// returns, for each, which of reqs it belonged to.
func (s *sched) order(reqs ...*request) []int {
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
	if s.classes[0].counts.dropped != 2 || s.queued != 0 || ga.pending != 0 || !ga.dropped {
		t.Errorf("dropped %d, queued %d, pending %d: want 2, 0, 0", s.classes[0].counts.dropped, s.queued, ga.pending)
	}
}

func TestSchedQueueFull(t *testing.T) {
	s := testSched(t, Config{Workers: 2, QueueSize: 3})
	r := s.reg("")
	s.admitN(t, r, 5) // 2 free slots + 3 queue places
	g := &group{sched: s, req: r, queries: repeat(1, Func(noop))}
	g.Context, g.cancel = context.WithCancelCause(context.Background())
	defer g.cancel(nil)
	if err := s.admit(g, false); !errors.Is(err, ErrQueueFull) || s.classes[0].counts.rejected != 1 || s.queued != 5 {
		t.Errorf("admit into a full queue: %v, rejected %d, queued %d", err, s.classes[0].counts.rejected, s.queued)
	}
}

// TestConnLimitDrop: when a database's connection limit drops below the
// queries running, no slot takes another query until they are fewer than
// the limit; the smallest limit of two databases holds; and clearing the
// limits runs Workers at once again. Counted, not timed.
func TestConnLimitDrop(t *testing.T) {
	p := newPool(t, Config{Workers: 4})
	var running, most atomic.Int64
	release := make(chan struct{})
	started := make(chan struct{}, 64)
	q := Func(func(context.Context) error {
		if n := running.Add(1); n > most.Load() {
			most.Store(n)
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- Fanout(handleCtx(t, p), repeat(16, q)...) }()
	for range 4 {
		<-started
	}
	a, b := new(int), new(int) // two databases
	p.sched.setConnLimit(a, 3)
	p.sched.setConnLimit(b, 2)
	if st := p.Stats(); st.Limit != 2 || st.LimitReason != LimitConnections {
		t.Fatalf("Stats: Limit %d, reason %q; want 2, %q", st.Limit, st.LimitReason, LimitConnections)
	}
	most.Store(running.Load())
	// Let the 4 running end one at a time: none starts until 2 remain.
	for range 2 {
		release <- struct{}{}
	}
	for range 2 { // two more may start now, one for each that ends
		release <- struct{}{}
		<-started
	}
	if n := running.Load(); n > 2 {
		t.Errorf("%d queries running under a limit of 2", n)
	}
	p.sched.setConnLimit(b, 0) // b recovered: a's 3 holds
	if st := p.Stats(); st.Limit != 3 {
		t.Errorf("Stats.Limit %d with one database at 3, want 3", st.Limit)
	}
	p.sched.setConnLimit(a, 0)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Limit != 4 || st.LimitReason != "" {
		t.Errorf("after the shortage: Limit %d, reason %q", st.Limit, st.LimitReason)
	}
}
