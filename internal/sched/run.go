package sched

import (
	"context"
	"errors"
)

// Await runs the query Admit gave g's caller, and the next ones of g while
// they come first, then waits until none of g's queries is pending, and
// returns the outcome: nil, the first failure (made by Config.Failed), or,
// when queries were dropped because g's context ended, its cause. When the
// context ends first, the queued queries are dropped at once: the member's
// AfterFunc does so for the request's end, this does so for a Fanout
// context of its own (a timeout, say) and for a sibling's failure. Its
// dropped queries are reported (Work.Ended) before it returns.
func (s *Sched) Await(g *Group) error {
	defer g.cancel(nil)
	if g.first >= 0 {
		s.run(g.kind, g, g.first, g.parent, g.sampleFirst)
	}
	s.mu.Lock()
	if g.pending > 0 {
		finished := make(chan struct{})
		g.finished = finished
		s.mu.Unlock()
		select {
		case <-finished:
		case <-g.Done():
			s.mu.Lock()
			s.drop(g)
			s.mu.Unlock()
			<-finished
		}
		s.mu.Lock()
	}
	g.req.liveGroups.remove(g)
	err, dropped := g.err, g.dropped
	s.mu.Unlock()
	if !dropped {
		return err
	}
	if g.observed {
		for i := g.droppedFrom; i < g.n; i++ {
			g.work.Ended(i, Event{Admitted: g.admitted.time(), Finished: g.droppedAt.time(), Outcome: OutcomeDropped})
		}
	}
	if err == nil {
		// Dropped because g's context ended: its cause says why (ErrClosed
		// from a Shutdown out of time, or plain ctx.Err()).
		err = context.Cause(g)
	}
	return err
}

// slotKind says whose slot a goroutine runs queries in, which decides the
// next query it takes and how it gives the slot back.
type slotKind int

const (
	helperSlot slotKind = iota // a helper's: the best ready query of any request
	ownSlot                    // a Fanout caller's: its own group's, while that comes first
	lentSlot                   // a nested caller's, lent by the parent query: its own group's, regardless
)

// wake starts a helper goroutine when a slot is free and a request is ready.
// Helpers start one at a time: each calls wake again once it holds a query,
// so a burst of no-op queries costs one goroutine, not one per free slot.
// Callers hold mu.
func (s *Sched) wake() {
	if s.spawning == 0 && s.slots < s.limit() && s.head() != nil {
		s.slots++
		s.spawning++
		go s.help()
	}
}

// help is a helper goroutine. It was started holding a slot (counted in
// slots and spawning) and runs the best ready queries until none is left.
func (s *Sched) help() {
	s.mu.Lock()
	s.spawning--
	g, i := s.pop()
	if g == nil {
		s.vacate()
		s.mu.Unlock()
		return
	}
	sampled := s.sampling()
	s.wake()
	s.mu.Unlock()
	s.run(helperSlot, g, i, nil, sampled)
}

// run is the one slot-holding loop, of helpers and callers alike: it runs
// query i of g (already started) and then the next query that kind allows,
// until there is none, and gives the slot back. parent is the group whose
// slot a lentSlot borrows. A query that calls runtime.Goexit ends the
// goroutine, not the loop's bookkeeping: its slot is given back, and if the
// goroutine was g's caller (which will never wait for g now), g's queued
// queries are dropped. sampled says whether query i's run feeds the
// adaptive limit (sampling); never in a lent slot, which is not the pool's
// own.
func (s *Sched) run(kind slotKind, g *Group, i int, parent *Group, sampled bool) {
	caller := g // the caller's own group, unless a helper
	done := false
	var started stamp // of query i, when timed; 0 until read
	defer func() {
		if !done {
			s.abandon(kind, g, i, caller, parent, started)
		}
	}()
	for {
		timed := g.observed || sampled
		if timed && started == 0 {
			started = now()
		}
		err, panicked := g.call(i)
		// Whether it failed or was cancelled is decided once, here, so that
		// the Work and Stats agree.
		outcome := decide(err, panicked, g.Err() != nil)
		// One clock read serves as this query's end and the next one's
		// start: the time between is the loop's own bookkeeping.
		end := g.ended(i, started, err, outcome, timed)
		s.mu.Lock()
		if sampled && outcome == OutcomeOK {
			s.learn(started, end)
		}
		s.finish(g, i, err, kind != lentSlot, outcome)
		started = end
		prev := g
		if g, i = s.nextIn(kind, g, parent); i < 0 {
			s.giveBack(kind, parent)
			done = true
			s.mu.Unlock()
			return
		}
		sampled = kind != lentSlot && s.sampling()
		if g != prev {
			// Another Fanout's query, perhaps admitted after the clock read
			// above: it starts now.
			started = 0
		}
		s.mu.Unlock()
	}
}

// call runs query i, turning a panic into Config.Panicked's error.
func (g *Group) call(i int) (err error, panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			err, panicked = g.sched.cfg.Panicked(v), true
		}
	}()
	return g.work.Run(g, i), false
}

// decide returns the outcome of a query that returned err (after a panic,
// if panicked), its group's context done or not (cancelled).
func decide(err error, panicked, cancelled bool) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case panicked:
		return OutcomePanic
	case cancelled:
		return OutcomeCancelled
	}
	return OutcomeError
}

// ended tells g's Work how query i, started at started, ended, if g is
// observed, and returns the time it ended (zero unless timed). Called
// outside the lock.
func (g *Group) ended(i int, started stamp, err error, o Outcome, timed bool) stamp {
	if !timed {
		return 0
	}
	end := now()
	if g.observed {
		g.work.Ended(i, Event{Admitted: g.admitted.time(), Started: started.time(), Finished: end.time(), Outcome: o, Err: err})
	}
	return end
}

// errGoexit stands in for the result of a query that called runtime.Goexit
// (t.FailNow in a test, for instance): it never returned, yet its slot must
// be freed and its Fanout must end.
var errGoexit = errors.New("reqpool: query called runtime.Goexit")

// abandon is the bookkeeping of a loop of kind whose query i of g called
// runtime.Goexit: the query fails, the slot is given back, and if the
// goroutine was the caller of caller (which will never wait for it now),
// its queued queries are dropped.
func (s *Sched) abandon(kind slotKind, g *Group, i int, caller, parent *Group, started stamp) {
	g.ended(i, started, errGoexit, OutcomePanic, g.observed)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finish(g, i, errGoexit, kind != lentSlot, OutcomePanic)
	if kind != helperSlot {
		s.drop(caller)
	}
	s.giveBack(kind, parent)
}

// nextIn starts the query that a loop of kind runs after one of g, and
// returns it, or returns -1 when there is none. Callers hold mu.
func (s *Sched) nextIn(kind slotKind, g, parent *Group) (*Group, int) {
	if kind != lentSlot && s.slots > s.limit() {
		return g, -1 // the limit dropped: this slot is one too many
	}
	if kind == helperSlot {
		next, i := s.pop()
		if next != nil {
			s.wake()
		}
		return next, i
	}
	i := s.nextOwn(g, kind != lentSlot)
	if i >= 0 || kind != lentSlot {
		return g, i
	}
	// Other nested Fanouts of the same parent query, which could not
	// borrow this slot, wait for it: serve them in it before giving it
	// back, or they would wait for a slot that the parent holds while it
	// waits for them (with one worker, or with the request at its
	// PerRequest cap, forever).
	if next := s.lentNext(g.req, parent); next != nil {
		return next, s.start(next, false)
	}
	return g, -1
}

// nextOwn starts g's next query for its caller, or returns -1 when the
// caller should stop: nothing of g is queued, g's context is done, or (in an
// own slot) another request's query comes first. Callers hold mu.
func (s *Sched) nextOwn(g *Group, counted bool) int {
	if g.started == g.n {
		return -1
	}
	if g.Err() != nil {
		s.drop(g)
		return -1
	}
	if counted && !s.firstInLine(g) {
		return -1
	}
	return s.start(g, counted)
}

// lentNext returns the oldest queued group of r that is a nested Fanout of
// parent, dropping on the way those whose context is done, or nil. Callers
// hold mu.
func (s *Sched) lentNext(r *request, parent *Group) *Group {
	for x := r.queuedGroups.head; x != nil; {
		next := x.links[queuedList].next
		if x.parent == parent {
			if x.Err() == nil {
				return x
			}
			s.drop(x)
		}
		x = next
	}
	return nil
}

// giveBack gives up the slot a loop of kind held. Callers hold mu.
func (s *Sched) giveBack(kind slotKind, parent *Group) {
	if kind == lentSlot {
		parent.lent--
	} else {
		s.vacate()
	}
}

// vacate gives back a slot held by a caller or helper that has nothing
// more to run in it. If a request is ready, the slot passes to a new helper
// instead, unless the limit has dropped below the slots held. Callers hold
// mu.
func (s *Sched) vacate() {
	if s.head() != nil && s.slots <= s.limit() {
		s.spawning++
		go s.help()
		return
	}
	s.slots--
	s.signalIdle()
}

// pop starts the next query (see fair.go) and returns it, or returns nil
// when no request is ready. The caller holds a slot. Callers hold mu.
func (s *Sched) pop() (*Group, int) {
	for r := s.head(); r != nil; r = s.head() {
		g := r.queuedGroups.head
		if g.Err() != nil {
			s.drop(g)
			continue
		}
		return g, s.start(g, true)
	}
	return nil, -1
}

// firstInLine reports whether g's next query is the one the scheduler would
// start next: g's request is the head (see fair.go) and g is its oldest
// queued group. Callers hold mu.
func (s *Sched) firstInLine(g *Group) bool {
	return s.head() == g.req && g.req.queuedGroups.head == g
}

// start takes g's next queued query. counted says whether it runs in a slot
// of its own (false: in a slot lent by its parent). Callers hold mu.
func (s *Sched) start(g *Group, counted bool) int {
	r := g.req
	i := g.started
	g.started++
	g.executing++
	if g.started == g.n {
		r.queuedGroups.remove(g)
	}
	if counted {
		s.turn++
		r.flow.turn, r.flow.class.turn = s.turn, s.turn
		s.count(r, -1, 1)
	} else {
		s.count(r, -1, 0)
	}
	s.rekey(r)
	return i
}

// finish records the end of query i of g, which returned err with outcome
// o (see run). Callers hold mu.
func (s *Sched) finish(g *Group, i int, err error, counted bool, o Outcome) {
	r := g.req
	f := r.flow
	c := f.class
	g.executing--
	g.pending--
	f.completed++
	c.counts.Completed++
	if counted {
		s.count(r, 0, -1)
	}
	if err != nil {
		s.fail(g, i, err, o)
	}
	s.rekey(r)
	g.signal()
	if r.running == 0 && r.drained != nil {
		close(r.drained)
		r.drained = nil
	}
	c.retire(f)
}

// fail counts query i of g, which returned err with outcome o, as
// cancelled or failed, and makes the group's first failure its outcome,
// cancelling the others and dropping those queued. Callers hold mu.
func (s *Sched) fail(g *Group, i int, err error, o Outcome) {
	if o == OutcomeCancelled {
		g.req.flow.class.counts.Cancelled++
	} else {
		g.req.flow.class.counts.Failed++
	}
	if g.err != nil {
		return
	}
	var cause error
	if g.Err() != nil { // the caller's context ended: say so, whatever the driver said
		if c := context.Cause(g); !errors.Is(err, c) {
			cause = c
		}
	}
	g.err = s.cfg.Failed(i, err, cause)
	g.cancel(g.err)
	s.drop(g)
}

// drop removes g's queued queries: they never start. Callers hold mu.
func (s *Sched) drop(g *Group) {
	k := g.n - g.started
	if k == 0 {
		return
	}
	r := g.req
	r.queuedGroups.remove(g)
	g.droppedFrom = g.started
	if g.observed {
		g.droppedAt = now()
	}
	g.started = g.n
	g.pending -= k
	g.dropped = true
	s.count(r, -k, 0)
	r.flow.class.counts.Dropped += uint64(k)
	s.rekey(r)
	g.signal()
	s.signalIdle()
}
