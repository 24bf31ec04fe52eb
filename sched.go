package reqpool

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"time"
)

// sched is a Pool's scheduler: everything the pool's mutex guards lives
// here, in its fields, in each request's queue (request) and in each Fanout
// call's counts (group). The policy is described on Pool.
//
// Invariants, all under mu:
//   - slots <= limit() (workers, or fewer during a connection shortage;
//     when the limit drops, until enough slots are given back): every query
//     that executes in a slot of its own, every caller holding a slot
//     between its queries and every helper starting up holds one, counted in
//     slots. A nested Fanout's caller runs its queries
//     in the slot its parent query holds (lent), and takes none.
//   - A slot is free (slots < limit()) only while no request is ready, or
//     while a helper is starting (spawning > 0) to take the work: the pool is
//     work-conserving, across classes and flows too.
//   - A request is ready when it has queued queries and is below the
//     perRequest cap. A flow's ready queue holds exactly its ready requests,
//     ordered by key, then seq; a class's ready queue holds exactly its flows
//     whose ready queue is not empty (see fair.go).
//   - queued is the sum of the classes' queued counts, a class's is the sum
//     of its requests' queued counts, and a request's is the sum of the
//     unstarted queries of its groups, which are the groups on its
//     queuedGroups list. The running counts of requests, flows and classes sum
//     up the same way, to executing.
//   - A group whose context is done never starts another query: pop drops it.
type sched struct {
	workers, perRequest int      // Config's, after defaults; read-only
	classes             []*class // Config.Classes' order, or one class; the slice is read-only

	mu         sync.Mutex
	connLimit  int                   // during a connection shortage, the most queries its connections run at once (the smallest of connLimits); 0 otherwise
	connLimits map[any]int           // the limits of the databases short of connections (setConnLimit), by database
	slots      int                   // slots held (see the invariants)
	executing  int                   // queries executing in slots of their own (Stats.Running)
	spawning   int                   // helpers started and not yet holding a query
	queued     int                   // admitted queries not yet started
	turn       uint64                // queries started in slots of their own: the clock of class and flow turns
	requests   map[*request]struct{} // registered requests not yet released (Stats.Requests)
	closed     bool                  // Shutdown was called
	seq        uint64                // requests registered, for request.seq
	idle       chan struct{}         // closed once closed with nothing queued or in a slot; nil until Shutdown
}

// request is one request's place in the scheduler: its queued groups, its
// counts and its key. A Handle registers it with its first Fanout.
type request struct {
	// Guarded by sched.mu.
	queuedGroups groupList     // groups with queued queries, oldest first
	liveGroups   groupList     // groups whose caller has not had its outcome, for cancelling them all
	queued       int           // queries admitted and not started
	running      int           // queries executing in slots of their own
	key          uint64        // oldest queued group's arrival + (queued+running)×workers; see Pool
	index        int           // position in flow.ready, or -1
	seq          uint64        // registration order, the tie-break
	released     bool          // the handle was released: no more Fanouts
	drained      chan struct{} // closed when running drops to 0 after release; nil unless someone waits

	// Set by register and never changed.
	flow  *flow         // the flow (and through it the class) it belongs to
	id    string        // the handle's request id, for Pool.DebugHandler
	since time.Duration // when the handle registered (its first Fanout), since epoch
}

// group is one Fanout call. It is also the context its queries receive: the
// embedded context is cancelled on the first failure, and Value answers
// groupKey with the group itself, which is how a nested Fanout finds the
// slot it may borrow.
type group struct {
	context.Context
	cancel  context.CancelCauseFunc
	sched   *sched   // the scheduler that admitted it
	req     *request // the request it belongs to
	parent  *group   // for a nested Fanout, the group of the query that made it
	queries []Query

	// For observers (see observe.go); obs is nil when there are none, and
	// then the rest stays zero.
	obs      []Observer
	reqID    string
	admitted time.Time

	// Guarded by sched.mu.
	arrival     uint64 // its flow's completed count when the group was admitted
	started     int    // queries[started:] are queued
	pending     int    // queries neither finished nor dropped
	executing   int    // queries executing, in any slot
	lent        int    // nested Fanout callers running in the slots of executing queries
	dropped     bool   // some queries were dropped unstarted: queries[droppedFrom:]
	droppedFrom int
	droppedAt   time.Time     // when, for observers
	err         error         // the first failure, a *QueryError
	finished    chan struct{} // closed when pending reaches 0; nil until the caller waits
	links       [2]links      // its places on req's lists, indexed by listKind
}

type groupKey struct{}

// Value implements context.Context.
func (g *group) Value(key any) any {
	if _, ok := key.(groupKey); ok {
		return g
	}
	return g.Context.Value(key)
}

// call runs query i, turning a panic into a *PanicError.
func (g *group) call(i int) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = newPanicError(v)
		}
	}()
	return g.queries[i].run(g)
}

func newSched(cfg Config) *sched {
	s := &sched{workers: cfg.Workers, perRequest: cfg.PerRequest, requests: make(map[*request]struct{}), connLimits: make(map[any]int)}
	for _, c := range cfg.classes() {
		k := &class{name: c.Name, share: c.Share, queueSize: c.QueueSize, maxFanout: min(cfg.MaxFanout, cfg.Workers+c.QueueSize),
			named: make(map[string]*flow)}
		k.anon = &flow{class: k, index: -1}
		s.classes = append(s.classes, k)
	}
	return s
}

// limit is the most queries that may hold slots of their own at once:
// workers, or fewer while the database is short of connections
// (setConnLimit). It is the one place the scheduler reads its limit.
// Callers hold mu.
func (s *sched) limit() int {
	if s.connLimit > 0 && s.connLimit < s.workers {
		return s.connLimit
	}
	return s.workers
}

// setConnLimit sets the limit of a connection shortage of the database
// from: n queries at once, or none for 0. Queries beyond it wait in the
// queue. With several databases on one pool, the smallest limit holds.
func (s *sched) setConnLimit(from any, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > 0 {
		s.connLimits[from] = n
	} else {
		delete(s.connLimits, from)
	}
	s.connLimit = 0
	for _, l := range s.connLimits {
		if s.connLimit == 0 || l < s.connLimit {
			s.connLimit = l
		}
	}
	s.wake()
}

// register returns a new request for the handle with request id id, in
// class c and the flow named flow there, added to the scheduler. Callers
// hold mu.
func (s *sched) register(id string, c *class, flow string) *request {
	s.seq++
	r := &request{index: -1, seq: s.seq, queuedGroups: groupList{kind: queuedList}, liveGroups: groupList{kind: liveList},
		flow: c.flowFor(flow), id: id, since: time.Since(epoch)}
	s.requests[r] = struct{}{}
	return r
}

// unregister takes r, whose handle is released, out of the scheduler's
// requests. Callers hold mu.
func (s *sched) unregister(r *request) {
	r.released = true
	delete(s.requests, r)
	f := r.flow
	f.refs--
	f.class.retire(f)
}

// newGroup returns the group of a Fanout of queries on h under ctx, not
// yet admitted. Its context is ctx's child, cancelled by its first failure.
// A Fanout made with the context of a query of this scheduler's is nested:
// that query's group is its parent.
func (s *sched) newGroup(ctx context.Context, h *Handle, obs []Observer, queries []Query) *group {
	parent, _ := ctx.Value(groupKey{}).(*group)
	if parent != nil && parent.sched != s {
		parent = nil // another pool's: no slot to borrow
	}
	g := &group{sched: s, parent: parent, queries: queries}
	if obs != nil {
		g.obs, g.reqID, g.admitted = obs, h.id, now()
	}
	g.Context, g.cancel = context.WithCancelCause(ctx)
	return g
}

// join admits g, of h's request, and returns the query its caller runs at
// once in the slot kind (first is -1 if none), or why g is refused (see
// admit).
func (s *sched) join(g *group, h *Handle) (first int, kind slotKind, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := h.enter(); err != nil {
		return -1, 0, err
	}
	g.req = h.req
	// A nested caller may borrow its parent's slot while the parent waits, as
	// long as no more callers borrow from the group than it has executing
	// queries (a query could share its context with goroutines of its own).
	parent := g.parent
	lent := parent != nil && parent.lent < parent.executing
	if err := s.admit(g, lent); err != nil {
		return -1, 0, err
	}
	first, kind = -1, ownSlot
	switch {
	case lent:
		parent.lent++
		first, kind = s.start(g, false), lentSlot
	case s.slots < s.limit() && s.firstInLine(g):
		// A slot is free and g's query comes first: the caller runs it
		// itself. (A helper still starting holds a slot of its own, and
		// will take the next query.)
		s.slots++
		first = s.start(g, true)
	}
	s.wake()
	return first, kind, nil
}

// admit enqueues g, or returns why it cannot. A Fanout fits when its queries
// fit into the free slots usable by its request, plus the lent slot of a
// nested caller, plus the free space of its class's queue. Callers hold mu.
func (s *sched) admit(g *group, lent bool) error {
	r, n := g.req, len(g.queries)
	f := r.flow
	c := f.class
	switch {
	case s.closed:
		c.counts.rejected++
		return ErrClosed
	case r.released:
		return errReleased // the handle's request is over
	}
	free := s.limit() - s.slots
	if limit := s.perRequest; limit > 0 {
		free = min(free, limit-r.running)
	}
	free = max(free, 0)
	if lent {
		free++
	}
	if c.queued+n > c.queueSize+free {
		c.counts.rejected++
		// Formatted by its caller, outside the lock.
		return &queueFullError{queries: n, class: c.name, queued: c.queued, queueSize: c.queueSize, free: free}
	}
	g.arrival = f.completed
	g.pending = n
	r.queuedGroups.push(g)
	r.liveGroups.push(g)
	s.count(r, n, 0)
	c.counts.submitted += uint64(n)
	s.rekey(r)
	return nil
}

// count changes r's queued and running counts by queued and running, and with them
// those of its flow, its class and the scheduler: the one place that keeps
// them summing up. Callers hold mu, and then rekey r.
func (s *sched) count(r *request, queued, running int) {
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
// Fanout forever. Callers hold mu.
func (s *sched) rekey(r *request) {
	eligible := r.queued > 0 && (s.perRequest == 0 || r.running < s.perRequest)
	if head := r.queuedGroups.head; head != nil {
		r.key = head.arrival + uint64(r.queued+r.running)*uint64(s.workers)
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

// pop starts the next query (see fair.go) and returns it, or returns nil
// when no request is ready. The caller holds a slot. Callers hold mu.
func (s *sched) pop() (*group, int) {
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

// start takes g's next queued query. counted says whether it runs in a slot
// of its own (false: in a slot lent by its parent). Callers hold mu.
func (s *sched) start(g *group, counted bool) int {
	r := g.req
	i := g.started
	g.started++
	g.executing++
	if g.started == len(g.queries) {
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

// finish records the end of query i of g, which returned err: cancelled
// if err came once g's context had ended (see run). Callers hold mu.
func (s *sched) finish(g *group, i int, err error, counted, cancelled bool) {
	r := g.req
	f := r.flow
	c := f.class
	g.executing--
	g.pending--
	f.completed++
	c.counts.completed++
	if counted {
		s.count(r, 0, -1)
	}
	if err != nil {
		// Its Fanout's context ended (the caller's, a sibling's failure,
		// Shutdown) before it returned: cancelled, unless it panicked.
		if cancelled {
			c.counts.cancelled++
		} else {
			c.counts.failed++
		}
		if g.err == nil {
			qe := &QueryError{Index: i, Err: err}
			if g.Err() != nil { // the caller's context ended: say so, whatever the driver said
				if cause := context.Cause(g); !errors.Is(err, cause) {
					qe.ctx = cause
				}
			}
			g.err = qe
			g.cancel(qe)
			s.drop(g)
		}
	}
	s.rekey(r)
	g.signal()
	if r.running == 0 && r.drained != nil {
		close(r.drained)
		r.drained = nil
	}
	c.retire(f)
}

// drop removes g's queued queries: they never start. Callers hold mu.
func (s *sched) drop(g *group) {
	k := len(g.queries) - g.started
	if k == 0 {
		return
	}
	r := g.req
	r.queuedGroups.remove(g)
	g.droppedFrom = g.started
	if g.obs != nil {
		g.droppedAt = now()
	}
	g.started = len(g.queries)
	g.pending -= k
	g.dropped = true
	s.count(r, -k, 0)
	r.flow.class.counts.dropped += uint64(k)
	s.rekey(r)
	g.signal()
	s.signalIdle()
}

// wait blocks until none of g's queries is pending and returns the outcome.
// When g's context ends first, the queued queries are dropped at once: the
// handle's AfterFunc does so for the request's end, this does so for a
// Fanout context of its own (a timeout, say) and for a sibling's failure.
func (s *sched) wait(g *group) error {
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
	g.recordDropped()
	if err == nil && dropped {
		// Dropped because g's context ended: its cause says why (ErrClosed
		// from a Shutdown out of time, or plain ctx.Err()).
		err = context.Cause(g)
	}
	return err
}

// cancelRequest cancels the context of every live group of r with cause and
// drops every queued query of r. Callers hold mu.
func (s *sched) cancelRequest(r *request, cause error) {
	for g := r.liveGroups.head; g != nil; g = g.links[liveList].next {
		g.cancel(cause)
	}
	for r.queuedGroups.head != nil {
		s.drop(r.queuedGroups.head)
	}
}

// signal wakes the waiting caller once nothing is pending. Callers hold
// sched.mu.
func (g *group) signal() {
	if g.pending == 0 && g.finished != nil {
		close(g.finished)
		g.finished = nil
	}
}

// signalIdle closes idle once the pool is closed and no slot is held and
// nothing queued. Callers hold mu.
func (s *sched) signalIdle() {
	if s.idle != nil && s.slots == 0 && s.queued == 0 {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
}

// wake starts a helper goroutine when a slot is free and a request is ready.
// Helpers start one at a time: each calls wake again once it holds a query,
// so a burst of no-op queries costs one goroutine, not one per free slot.
// Callers hold mu.
func (s *sched) wake() {
	if s.spawning == 0 && s.slots < s.limit() && s.head() != nil {
		s.slots++
		s.spawning++
		go s.help()
	}
}

// vacate gives back a slot held by a caller or helper that has nothing
// more to run in it. If a request is ready, the slot passes to a new helper
// instead, unless the limit has dropped below the slots held. Callers hold
// mu.
func (s *sched) vacate() {
	if s.head() != nil && s.slots <= s.limit() {
		s.spawning++
		go s.help()
		return
	}
	s.slots--
	s.signalIdle()
}

// slotKind says whose slot a goroutine runs queries in, which decides the
// next query it takes and how it gives the slot back.
type slotKind int

const (
	helperSlot slotKind = iota // a helper's: the best ready query of any request
	ownSlot                    // a Fanout caller's: its own group's, while that comes first
	lentSlot                   // a nested caller's, lent by the parent query: its own group's, regardless
)

// help is a helper goroutine. It was started holding a slot (counted in
// slots and spawning) and runs the best ready queries until none is left.
func (s *sched) help() {
	s.mu.Lock()
	s.spawning--
	g, i := s.pop()
	if g == nil {
		s.vacate()
		s.mu.Unlock()
		return
	}
	s.wake()
	s.mu.Unlock()
	s.run(helperSlot, g, i, nil)
}

// run is the one slot-holding loop, of helpers and callers alike: it runs
// query i of g (already started) and then the next query that kind allows,
// until there is none, and gives the slot back. parent is the group whose
// slot a lentSlot borrows. A query that calls runtime.Goexit ends the
// goroutine, not the loop's bookkeeping: its slot is given back, and if the
// goroutine was g's caller (which will never wait for g now), g's queued
// queries are dropped.
func (s *sched) run(kind slotKind, g *group, i int, parent *group) {
	caller := g // the caller's own group, unless a helper
	done := false
	var started time.Time // of query i, for observers
	defer func() {
		if !done {
			s.abandon(kind, g, i, caller, parent, started)
		}
	}()
	for {
		if g.obs != nil && started.IsZero() {
			started = now()
		}
		err := g.call(i)
		// Whether it failed or was cancelled is decided once, here, so that
		// the observers and Stats agree.
		cancelled := err != nil && g.Err() != nil && !panicked(err)
		// One clock read serves as this query's end and the next one's
		// start: the time between is the loop's own bookkeeping.
		started = g.recordQuery(i, started, err, cancelled)
		s.mu.Lock()
		s.finish(g, i, err, kind != lentSlot, cancelled)
		prev := g
		if g, i = s.nextIn(kind, g, parent); i < 0 {
			s.giveBack(kind, parent)
			done = true
			s.mu.Unlock()
			return
		}
		if g != prev {
			// Another Fanout's query, perhaps admitted after the clock read
			// above: it starts now.
			started = time.Time{}
		}
		s.mu.Unlock()
	}
}

// nextIn starts the query that a loop of kind runs after one of g, and
// returns it, or returns -1 when there is none. Callers hold mu.
func (s *sched) nextIn(kind slotKind, g, parent *group) (*group, int) {
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

// abandon is the bookkeeping of a loop of kind whose query i of g called
// runtime.Goexit: the query fails, the slot is given back, and if the
// goroutine was the caller of caller (which will never wait for it now),
// its queued queries are dropped.
func (s *sched) abandon(kind slotKind, g *group, i int, caller, parent *group, started time.Time) {
	g.recordQuery(i, started, errGoexit, false)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finish(g, i, errGoexit, kind != lentSlot, false)
	if kind != helperSlot {
		s.drop(caller)
	}
	s.giveBack(kind, parent)
}

// lentNext returns the oldest queued group of r that is a nested Fanout of
// parent, dropping on the way those whose context is done, or nil. Callers
// hold mu.
func (s *sched) lentNext(r *request, parent *group) *group {
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
func (s *sched) giveBack(kind slotKind, parent *group) {
	if kind == lentSlot {
		parent.lent--
	} else {
		s.vacate()
	}
}

// nextOwn starts g's next query for its caller, or returns -1 when the
// caller should stop: nothing of g is queued, g's context is done, or (in an
// own slot) another request's query comes first. Callers hold mu.
func (s *sched) nextOwn(g *group, counted bool) int {
	if g.started == len(g.queries) {
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

// firstInLine reports whether g's next query is the one the scheduler would
// start next: g's request is the head (see fair.go) and g is its oldest
// queued group. Callers hold mu.
func (s *sched) firstInLine(g *group) bool {
	return s.head() == g.req && g.req.queuedGroups.head == g
}

// A groupList is one of a request's two intrusive lists of groups; the
// group's links for it are links[kind]. Guarded by sched.mu.
type groupList struct {
	kind       listKind
	head, tail *group
}

// listKind names a request's lists, and indexes a group's links.
type listKind int

const (
	queuedList listKind = iota // request.queuedGroups
	liveList                   // request.liveGroups
)

// links are a group's neighbours on one list.
type links struct{ prev, next *group }

// push appends g to l.
func (l *groupList) push(g *group) {
	g.links[l.kind].prev = l.tail
	if l.tail != nil {
		l.tail.links[l.kind].next = g
	} else {
		l.head = g
	}
	l.tail = g
}

// remove takes g off l.
func (l *groupList) remove(g *group) {
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

// compareReady orders two ready requests of a flow by key, then seq: the
// scheduler's order, which Pool.DebugHandler's places follow too.
func compareReady(keyA, seqA, keyB, seqB uint64) int {
	if c := cmp.Compare(keyA, keyB); c != 0 {
		return c
	}
	return cmp.Compare(seqA, seqB)
}
