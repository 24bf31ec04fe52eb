package sched

// Refusal says why Admit refused a Fanout, with what the scheduler saw.
type Refusal struct {
	Reason Reason
	Class  string // the request's class

	// For RefusedQueueFull.
	Queries, Queued, QueueSize, Free int
}

// Reason says why a Fanout was refused.
type Reason uint8

const (
	RefusedQueueFull Reason = iota + 1 // its queries do not fit into the free slots and its class's free queue
	RefusedClosed                      // Close was called
	RefusedReleased                    // its member was released
)

// Admit admits g, a Fanout of m's request: registers m on its first
// Fanout, queues g's queries, and decides whether its caller runs its
// first query at once (in a slot of its own while one is free and g comes
// first, or in its parent's lent slot), or else refuses g as a whole. It is
// the one place where a Fanout is admitted or refused. A refused g's
// context is cancelled.
func (s *Sched) Admit(g *Group, m *Member) (Refusal, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(m); err != nil {
		g.cancel(nil)
		return Refusal{Reason: RefusedReleased, Class: m.Class.name}, false
	}
	g.req = m.req
	// A nested caller may borrow its parent's slot while the parent waits, as
	// long as no more callers borrow from the group than it has executing
	// queries (a query could share its context with goroutines of its own).
	parent := g.parent
	lent := parent != nil && parent.lent < parent.executing
	if ref, ok := s.fit(g, lent); !ok {
		g.cancel(nil)
		return ref, false
	}
	s.enqueue(g)
	switch {
	case lent:
		parent.lent++
		g.first, g.kind = s.start(g, false), lentSlot
	case s.slots < s.limit() && s.firstInLine(g):
		// A slot is free and g's query comes first: the caller runs it
		// itself. (A helper still starting holds a slot of its own, and
		// will take the next query.)
		s.slots++
		g.first, g.kind = s.start(g, true), ownSlot
		g.sampleFirst = s.sampling()
	}
	s.wake()
	return Refusal{}, true
}

// fit reports whether g fits, or why not. A Fanout fits when its queries
// fit into the free slots usable by its request, plus the lent slot of a
// nested caller, plus the free space of its class's queue. Callers hold mu.
func (s *Sched) fit(g *Group, lent bool) (Refusal, bool) {
	r := g.req
	c := r.flow.class
	switch {
	case s.closed:
		c.counts.Rejected++
		return Refusal{Reason: RefusedClosed, Class: c.name}, false
	case r.released:
		return Refusal{Reason: RefusedReleased, Class: c.name}, false
	}
	free := s.admission() - s.slots
	if limit := s.cfg.PerRequest; limit > 0 {
		free = min(free, limit-r.running)
	}
	free = max(free, 0)
	if lent {
		free++
	}
	if c.queued+g.n > c.queueSize+free {
		c.counts.Rejected++
		return Refusal{Reason: RefusedQueueFull, Class: c.name, Queries: g.n, Queued: c.queued, QueueSize: c.queueSize, Free: free}, false
	}
	return Refusal{}, true
}

// enqueue queues g's queries on its request. Callers hold mu.
func (s *Sched) enqueue(g *Group) {
	r := g.req
	f := r.flow
	g.arrival = f.completed
	g.pending = g.n
	r.queuedGroups.push(g)
	r.liveGroups.push(g)
	s.count(r, g.n, 0)
	f.class.counts.Submitted += uint64(g.n)
	s.rekey(r)
}

// count changes r's queued and running counts by queued and running, and with them
// those of its flow, its class and the scheduler: the one place that keeps
// them summing up. Callers hold mu, and then rekey r.
func (s *Sched) count(r *request, queued, running int) {
	f := r.flow
	c := f.class
	r.queued += queued
	c.queued += queued
	s.queued += queued
	r.running += running
	f.running += running
	c.running += running
	s.executing += running
}

// rekey restores r's key and its place in (or out of) its flow's ready
// queue, and its flow's in its class's, after any change to r's queued or
// running counts or to its groups. Only a request with queued queries has a
// key, from the arrival of its oldest queued group: a long-lived request (a
// job's) that always has some work does not keep the arrival of its first
// Fanout forever. The remaining queries count at keyScale: with the
// adaptive limit, at that limit, so that the aging stays about a query
// time per remaining query when the limit is down, where Workers would let
// a large request be overtaken for Workers/limit times longer. Callers
// hold mu.
func (s *Sched) rekey(r *request) {
	eligible := r.queued > 0 && (s.cfg.PerRequest == 0 || r.running < s.cfg.PerRequest)
	if head := r.queuedGroups.head; head != nil {
		r.key = head.arrival + uint64(r.queued+r.running)*uint64(s.keyScale())
	}
	f := r.flow
	f.ready.place(r, eligible)
	if f.index < 0 {
		// A flow that becomes ready waits for its turn behind those that
		// were ready before it.
		f.turn = s.turn
	}
	f.class.ready.place(f, f.ready.Len() > 0)
}
