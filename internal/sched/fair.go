package sched

import (
	"cmp"
	"sync/atomic"
)

// The scheduler picks the next query in three steps, each fair in its own
// way (the policy is described on Pool):
//
//  1. the class furthest below its share of the workers: the smallest
//     running/share among the classes with a ready request;
//  2. in that class, the flow with the fewest queries executing;
//  3. in that flow, the request with the smallest key (fewest remaining
//     first, with aging).
//
// Ties at the first two steps go to the class or flow that has waited
// longest for its turn (turn), so that equals take turns.

// Class is one priority class (ClassConfig) in the scheduler. Its flows
// and requests belong to it for their whole life.
type Class struct {
	// Set by New and never changed.
	name      string // ClassConfig.Name
	share     int    // ClassConfig.Share
	queueSize int    // ClassConfig.QueueSize
	maxFanout int    // ClassConfig.MaxFanout
	anon      *flow  // the flow of its requests that were given none

	// Fanouts of its requests refused as too many (TooMany), counted
	// without taking Sched.mu; Stats adds them to counts.Rejected.
	tooMany atomic.Uint64

	// Guarded by Sched.mu.
	queued  int              // admitted queries of its requests not yet started
	running int              // its queries executing in slots of their own
	turn    uint64           // Sched.turn when it last started a query
	ready   prioQueue[*flow] // its flows with a ready request, by (running, turn)
	named   map[string]*flow // its named flows that have a registered request or an executing query
	counts  Counts
}

// Name returns the class's name.
func (c *Class) Name() string { return c.name }

// MaxFanout returns the most queries one of its Fanouts may have.
func (c *Class) MaxFanout() int { return c.maxFanout }

// QueueSize returns the most of its queries that wait at once.
func (c *Class) QueueSize() int { return c.queueSize }

// TooMany reports whether a Fanout of n queries can never be admitted in
// c, however idle the pool, counting it as rejected if so; first says
// whether it is the class's first such Fanout. It takes no lock.
func (c *Class) TooMany(n int) (tooMany, first bool) {
	if n <= c.maxFanout {
		return false, false
	}
	return true, c.tooMany.Add(1) == 1
}

// Class returns the class named name, "" naming the first, or nil if
// there is none.
func (s *Sched) Class(name string) *Class {
	if name == "" {
		return s.classes[0]
	}
	for _, c := range s.classes {
		if c.name == name {
			return c
		}
	}
	return nil
}

// before reports whether c is further below its share than d: c.running/c.share
// < d.running/d.share, or equal and c's turn came longer ago.
func (c *Class) before(d *Class) bool {
	// Cross-multiplied: running <= Workers < 2^31 and share <= maxShare < 2^20.
	if x, y := int64(c.running)*int64(d.share), int64(d.running)*int64(c.share); x != y {
		return x < y
	}
	return c.turn < d.turn
}

// flow is a set of requests of one class that share the class's workers as
// one: what Classify named (a tenant, a user), or, as the class's anon flow,
// all its requests that were named none.
type flow struct {
	// Set when made and never changed.
	class *Class
	name  string // "" for the class's anon flow

	// Guarded by Sched.mu.
	running   int                 // its queries executing in slots of their own
	completed uint64              // its queries that completed: the clock of its requests' keys
	turn      uint64              // Sched.turn when it last started a query or became ready
	ready     prioQueue[*request] // its ready requests, by (key, seq)
	index     int                 // position in class.ready, or -1
	refs      int                 // registered requests not yet released
}

// before orders the flows of a class: fewer queries executing first, then
// the one whose turn came longer ago.
func (f *flow) before(g *flow) bool {
	return compareFlows(f.running, f.turn, g.running, g.turn) < 0
}

// compareFlows orders two flows of a class by their running counts, then their
// turns: the scheduler's order, which LiveRequests follows.
func compareFlows(runningA int, turnA uint64, runningB int, turnB uint64) int {
	if c := cmp.Compare(runningA, runningB); c != 0 {
		return c
	}
	return cmp.Compare(turnA, turnB)
}

func (f *flow) heapIndex() *int { return &f.index }

// before orders a flow's ready requests: by key, then by registration.
func (r *request) before(q *request) bool {
	return compareReady(r.key, r.seq, q.key, q.seq) < 0
}

func (r *request) heapIndex() *int { return &r.index }

// pick returns the class whose query starts next, or nil when no request
// is ready. Callers hold mu.
func (s *Sched) pick() *Class {
	var best *Class
	for _, c := range s.classes {
		if c.ready.Len() > 0 && (best == nil || c.before(best)) {
			best = c
		}
	}
	return best
}

// head returns the request whose query starts next, or nil when none is
// ready. Callers hold mu.
func (s *Sched) head() *request {
	if c := s.pick(); c != nil {
		return c.ready[0].ready[0]
	}
	return nil
}

// flowFor returns c's flow named name, made if needed, with one more
// reference. Callers hold mu.
func (c *Class) flowFor(name string) *flow {
	f := c.anon
	if name != "" {
		if f = c.named[name]; f == nil {
			f = &flow{class: c, name: name, index: -1}
			c.named[name] = f
		}
	}
	f.refs++
	return f
}

// retire forgets f once no registered request refers to it and none of
// its queries executes: a flow is state for as long as it has work, so
// naming flows by something unbounded (a user id) costs nothing after.
// Callers hold mu.
func (c *Class) retire(f *flow) {
	// A query of a retired flow can still end (one that a query's own
	// goroutine fanned out in its parent's lent slot may outlive its
	// request): the name may belong to a newer flow by then.
	if f.refs == 0 && f.running == 0 && f != c.anon && c.named[f.name] == f {
		delete(c.named, f.name)
	}
}

// queueItem is what a prioQueue holds: a value that orders itself and
// keeps its own index in the queue (-1 when out of it).
type queueItem[T any] interface {
	comparable
	before(T) bool
	heapIndex() *int
}

// prioQueue is a binary min-heap of items that know their index, so that
// one can be moved or removed where it is. It is container/heap's
// algorithm, written out for the two item types: the scheduler fixes a
// queue at every start and finish, and container/heap's interface calls
// cost about a tenth of a Fanout (BenchmarkFanout8).
type prioQueue[T queueItem[T]] []T

func (q prioQueue[T]) Len() int { return len(q) }

// place puts x into q when in is true, restoring its position if it is
// there already (its order changed), and takes it out when in is false.
func (q *prioQueue[T]) place(x T, in bool) {
	if h := *q; in && len(h) == 1 && h[0] == x {
		// Alone: there is no order to restore. This is every call on a
		// class's queue in a pool without classes and flows (one class, one
		// flow), and on a flow's while it has one request ready. The check is inlined into the callers, sparing
		// them a call and the calls through the generic dictionary: a tenth
		// of a Fanout of 8 (BenchmarkFanout8).
		return
	}
	q.move(x, in)
}

// move is place, for an x that is not alone in q.
func (q *prioQueue[T]) move(x T, in bool) {
	h := *q
	switch i := *x.heapIndex(); {
	case in && i < 0:
		*x.heapIndex() = len(h)
		h = append(h, x)
		*q = h
		h.up(len(h) - 1)
	case in:
		if !h.down(i) {
			h.up(i)
		}
	case i >= 0:
		n := len(h) - 1
		if i != n {
			h.swap(i, n)
		}
		var zero T
		h[n] = zero
		*x.heapIndex() = -1
		h = h[:n]
		*q = h
		if i != n && !h.down(i) {
			h.up(i)
		}
	}
}

func (q prioQueue[T]) swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	*q[i].heapIndex() = i
	*q[j].heapIndex() = j
}

// up moves the item at i towards the root while it goes before its parent.
func (q prioQueue[T]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q[i].before(q[p]) {
			return
		}
		q.swap(i, p)
		i = p
	}
}

// down moves the item at i towards the leaves while a child goes before
// it, and reports whether it moved.
func (q prioQueue[T]) down(i int) bool {
	start, n := i, len(q)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && q[r].before(q[c]) {
			c = r
		}
		if !q[c].before(q[i]) {
			break
		}
		q.swap(i, c)
		i = c
	}
	return i > start
}

// compareReady orders two ready requests of a flow by key, then seq: the
// scheduler's order, which LiveRequests' places follow too.
func compareReady(keyA, seqA, keyB, seqB uint64) int {
	if c := cmp.Compare(keyA, keyB); c != 0 {
		return c
	}
	return cmp.Compare(seqA, seqB)
}
