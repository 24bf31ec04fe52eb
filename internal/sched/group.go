package sched

import (
	"context"
	"time"
)

// Work is what a Group runs, and whom it tells of each query's end:
// reqpool's Fanout, which embeds its Group.
type Work interface {
	// Run runs query i with ctx, its Group.
	Run(ctx context.Context, i int) error

	// Ended is told how query i ended, for a group Init made observed:
	// once for each query, on the goroutine that ran it (or, for a query
	// dropped unstarted, on the caller's, in Await), outside the lock.
	Ended(i int, e Event)
}

// Event is how one query of an observed group ended.
type Event struct {
	Admitted time.Time // when its group was admitted (Init)
	Started  time.Time // when it started; zero if it was dropped
	Finished time.Time // when it returned, or was dropped
	Outcome  Outcome
	Err      error // what it returned, for OutcomeError, OutcomePanic and OutcomeCancelled
}

// Outcome says how a query ended; reqpool.Outcome has the same values.
type Outcome uint8

const (
	OutcomeOK        Outcome = iota // returned nil
	OutcomeError                    // returned an error while its group's context was live
	OutcomePanic                    // panicked, or called runtime.Goexit
	OutcomeDropped                  // never started
	OutcomeCancelled                // returned an error once its group's context had ended
)

// A Group is one Fanout call. It is also the context its queries receive:
// the embedded context is cancelled on the first failure, and Value answers
// groupKey with the group itself, which is how a nested Fanout finds the
// slot it may borrow. Init it, then Admit and Await.
type Group struct {
	context.Context
	cancel context.CancelCauseFunc
	sched  *Sched   // the scheduler that admitted it
	req    *request // the request it belongs to
	parent *Group   // for a nested Fanout, the group of the query that made it
	work   Work
	n      int // how many queries

	// For observed groups; zero otherwise.
	observed bool
	admitted stamp

	// Set by Admit for Await: the query the caller runs at once (-1 if
	// none), in which slot, and whether it feeds the adaptive limit.
	first       int
	kind        slotKind
	sampleFirst bool

	// Guarded by Sched.mu.
	arrival     uint64 // its flow's completed count when the group was admitted
	started     int    // queries [started, n) are queued
	pending     int    // queries neither finished nor dropped
	executing   int    // queries executing, in any slot
	lent        int    // nested Fanout callers running in the slots of executing queries
	dropped     bool   // some queries were dropped unstarted: [droppedFrom, n)
	droppedFrom int
	droppedAt   stamp         // when, for observed groups
	err         error         // the first failure, made by Config.Failed
	finished    chan struct{} // closed when pending reaches 0; nil until the caller waits
	links       [2]links      // its places on req's lists, indexed by listKind
}

type groupKey struct{}

// Value implements context.Context.
func (g *Group) Value(key any) any {
	if _, ok := key.(groupKey); ok {
		return g
	}
	return g.Context.Value(key)
}

// Init readies g for a Fanout of n queries of w under ctx on s: its
// context is ctx's child, cancelled by its first failure or by Await's
// end. A Fanout made with the context of a query of s's is nested: that
// query's group is its parent. observed says whether w is told of the
// queries' ends (Work.Ended), which costs a clock read each.
func (s *Sched) Init(g *Group, ctx context.Context, w Work, n int, observed bool) {
	parent, _ := ctx.Value(groupKey{}).(*Group)
	if parent != nil && parent.sched != s {
		parent = nil // another pool's: no slot to borrow
	}
	g.sched, g.parent, g.work, g.n, g.first = s, parent, w, n, -1
	if observed {
		g.observed, g.admitted = true, now()
	}
	g.Context, g.cancel = context.WithCancelCause(ctx)
}

// Detached returns ctx without the group of the query it may come from:
// a Fanout made on it is not nested, and so borrows no slot of a query
// that may long have returned.
func Detached(ctx context.Context) context.Context { return detachedContext{ctx} }

type detachedContext struct{ context.Context }

// Value implements context.Context.
func (c detachedContext) Value(key any) any {
	if _, ok := key.(groupKey); ok {
		return nil
	}
	return c.Context.Value(key)
}

// signal wakes the waiting caller once nothing is pending. Callers hold
// Sched.mu.
func (g *Group) signal() {
	if g.pending == 0 && g.finished != nil {
		close(g.finished)
		g.finished = nil
	}
}

// A groupList is one of a request's two intrusive lists of groups; the
// group's links for it are links[kind]. Guarded by Sched.mu.
type groupList struct {
	kind       listKind
	head, tail *Group
}

// listKind names a request's lists, and indexes a group's links.
type listKind int

const (
	queuedList listKind = iota // request.queuedGroups
	liveList                   // request.liveGroups
)

// links are a group's neighbours on one list.
type links struct{ prev, next *Group }

// push appends g to l.
func (l *groupList) push(g *Group) {
	g.links[l.kind].prev = l.tail
	if l.tail != nil {
		l.tail.links[l.kind].next = g
	} else {
		l.head = g
	}
	l.tail = g
}

// remove takes g off l.
func (l *groupList) remove(g *Group) {
	k := &g.links[l.kind]
	if k.prev != nil {
		k.prev.links[l.kind].next = k.next
	} else {
		l.head = k.next
	}
	if k.next != nil {
		k.next.links[l.kind].prev = k.prev
	} else {
		l.tail = k.prev
	}
	*k = links{}
}
