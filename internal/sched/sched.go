// Package sched is reqpool's scheduler: the one place that admits or
// refuses a Fanout, orders the queries waiting (by class, flow and
// request), runs them in a bounded number of slots, drops them when their
// context ends, and reports each query's end. Everything its mutex guards,
// and every function that takes the mutex, is in this package; package
// reqpool reaches it through the exported names below and never through
// its fields. The policy is described on reqpool.Pool.
//
// A Fanout goes through it as: Member (the request, registered on its
// first Fanout) → Group (the Fanout: Init, then Admit, which admits or
// refuses it) → Await (runs the caller's own queries while a slot is free,
// and waits for the rest, which helper goroutines run) → Work.Ended for
// each query, outside the lock.
package sched

import (
	"sync"
	"time"
)

// Config configures a Sched. Its values are checked by package reqpool.
type Config struct {
	Workers    int           // the most queries that execute at once in slots of their own; > 0
	PerRequest int           // the most queries one request executes at once; 0 for no cap
	Classes    []ClassConfig // the priority classes, at least one; the first is the default

	// Panicked returns the error that a query which panicked with v
	// returns instead (reqpool's *PanicError). It runs in the query's
	// deferred recover.
	Panicked func(v any) error

	// AdaptiveFloor, when above 0, makes the limit adaptive: it moves
	// between AdaptiveFloor and Workers from the run times of the queries
	// (see adaptive). 0 keeps the limit at Workers.
	AdaptiveFloor int

	// Failed returns the error with which query i's failure err ends its
	// group: what Await returns, and the cause of the group's context.
	// cause is the cause of that context if it had ended when the query
	// returned, else nil. It runs under the lock: it must not block.
	Failed func(i int, err, cause error) error
}

// ClassConfig is one priority class, after reqpool's defaults.
type ClassConfig struct {
	Name      string // "" for the one class of a pool without classes
	Share     int    // its relative share of the workers while classes compete; > 0
	QueueSize int    // the most of its queries that wait at once
	MaxFanout int    // the most queries one of its Fanouts may have
}

// Sched is a pool's scheduler: everything its mutex guards lives here, in
// its fields, in each request's queue (request) and in each Fanout's counts
// (Group).
//
// Invariants, all under mu:
//   - slots <= limit() (workers, the adaptive limit, or fewer during a
//     connection shortage; when the limit drops, until enough slots are
//     given back): every query
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
type Sched struct {
	cfg     Config   // read-only
	classes []*Class // cfg.Classes' order; the slice is read-only

	mu         sync.Mutex
	adapt      *adaptive             // the adaptive limit; nil unless Config.AdaptiveFloor > 0
	connLimit  int                   // during a connection shortage, the most queries its connections run at once (the smallest of connLimits); 0 otherwise
	connLimits map[any]int           // the limits of the databases short of connections (SetConnLimit), by database
	slots      int                   // slots held (see the invariants)
	executing  int                   // queries executing in slots of their own (Stats.Running)
	spawning   int                   // helpers started and not yet holding a query
	queued     int                   // admitted queries not yet started
	turn       uint64                // queries started in slots of their own: the clock of class and flow turns
	requests   map[*request]struct{} // registered requests not yet released (Stats.Requests)
	closed     bool                  // Close was called
	seq        uint64                // requests registered, for request.seq
	idle       chan struct{}         // closed once closed with nothing queued or in a slot; nil until Close
}

// New returns a scheduler for cfg.
func New(cfg Config) *Sched {
	s := &Sched{cfg: cfg, requests: make(map[*request]struct{}), connLimits: make(map[any]int)}
	if cfg.AdaptiveFloor > 0 {
		s.adapt = newAdaptive(min(cfg.AdaptiveFloor, cfg.Workers), cfg.Workers)
	}
	for _, c := range cfg.Classes {
		k := &Class{name: c.Name, share: c.Share, queueSize: c.QueueSize, maxFanout: c.MaxFanout,
			named: make(map[string]*flow)}
		k.anon = &flow{class: k, index: -1}
		s.classes = append(s.classes, k)
	}
	return s
}

// limit is the most queries that may hold slots of their own at once:
// admission's (Workers, or fewer while the database is short of
// connections), or the adaptive limit where that is lower. It is the one
// place the scheduler reads its limit. Callers hold mu.
func (s *Sched) limit() int {
	l := s.admission()
	if s.adapt != nil {
		l = min(l, s.adapt.current())
	}
	return l
}

// sampling reports whether the query just started in a slot of its own
// feeds the adaptive limit: every query while the pool runs more than half
// its limit, where the limit is near to deciding, and one in sampleEvery
// otherwise, so that a lightly loaded adaptive pool pays two clock reads
// for one query in sampleEvery, not for each. Callers hold mu.
func (s *Sched) sampling() bool {
	return s.adapt != nil && (2*s.executing > s.limit() || s.turn%sampleEvery == 0)
}

// admission is the limit that Admit counts free slots against: limit()
// without the adaptive limit. The adaptive limit decides what runs, not
// what is admitted: counted against it, a Fanout larger than it and the
// queue would be refused for as long as the limit stayed down, and on an
// idle pool, which feeds the limit nothing, that is for ever. An adaptive
// pool's queue may so hold up to Workers less its limit beyond QueueSize.
// Callers hold mu.
func (s *Sched) admission() int {
	if s.connLimit > 0 && s.connLimit < s.cfg.Workers {
		return s.connLimit
	}
	return s.cfg.Workers
}

// keyScale is what a request's remaining queries count for in its key
// (rekey): the adaptive limit, not the limit in force, whose probes would
// key requests on two scales; Workers without it.
func (s *Sched) keyScale() int {
	if s.adapt != nil {
		return s.adapt.limit
	}
	return s.cfg.Workers
}

// sampleEvery is how often a query of an adaptive pool below its limit is
// timed.
const sampleEvery = 8

// learn feeds the adaptive limit the run of a query that ended well
// in a slot of its own; the query still counts in executing. A limit that
// rose takes on ready work at once; one that dropped is met as slots are
// given back (nextIn). Callers hold mu.
func (s *Sched) learn(started, ended stamp) {
	if s.adapt.sample(started, ended, s.executing) {
		s.wake()
	}
}

// SetConnLimit sets the limit of a connection shortage of the database
// from: n queries at once, or none for 0. Queries beyond it wait in the
// queue. With several databases on one pool, the smallest limit holds.
func (s *Sched) SetConnLimit(from any, n int) {
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

// Stats is a snapshot of a Sched: reqpool.Stats' figures, by class.
type Stats struct {
	Running, Queued, Requests, Limit int
	ConnLimited                      bool         // Limit is a connection shortage's
	Classes                          []ClassStats // in Config.Classes' order
}

// ClassStats is one class's part of Stats.
type ClassStats struct {
	Running, Queued, Flows int
	Counts
}

// Counts are a class's cumulative counters.
type Counts struct {
	Submitted, Completed, Failed, Cancelled, Dropped, Rejected uint64
}

// Stats returns a snapshot of the gauges and counters.
func (s *Sched) Stats() Stats {
	st := Stats{Classes: make([]ClassStats, len(s.classes))}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Running, st.Queued, st.Requests, st.Limit = s.executing, s.queued, len(s.requests), s.limit()
	st.ConnLimited = s.connLimit > 0 && s.connLimit == st.Limit && st.Limit < s.cfg.Workers
	for i, c := range s.classes {
		st.Classes[i] = ClassStats{Running: c.running, Queued: c.queued, Flows: len(c.named), Counts: c.counts}
		st.Classes[i].Rejected += c.tooMany.Load()
	}
	return st
}

// Close refuses every later Admit, and returns a channel that is closed
// once nothing is queued and no slot is held. It may be called again, and
// returns the same channel.
func (s *Sched) Close() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.idle == nil {
		s.idle = make(chan struct{})
		s.signalIdle()
	}
	return s.idle
}

// Closed reports whether Close was called.
func (s *Sched) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// CancelAll ends every registered request's live Fanouts with cause, as
// their requests' ends would: the contexts of their executing queries are
// cancelled, and their queued queries dropped.
func (s *Sched) CancelAll(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range s.requests {
		s.cancelRequest(r, cause)
	}
}

// signalIdle closes idle once the pool is closed and no slot is held and
// nothing queued. Callers hold mu.
func (s *Sched) signalIdle() {
	if s.idle != nil && s.slots == 0 && s.queued == 0 {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
}

// epoch is the origin of the scheduler's timestamps. time.Since(epoch)
// reads the monotonic clock alone, about half the cost of time.Now, which
// reads the wall clock too (23 ns against 43 on this project's machine).
// Read-only after package initialisation.
var epoch = time.Now()

// A stamp is a time as the monotonic time since epoch: a third of a
// time.Time's size, which keeps a Group within its allocation size class.
type stamp time.Duration

// now returns the current time from one monotonic clock read.
func now() stamp { return stamp(time.Since(epoch)) }

// time returns s as a time.Time: epoch plus the time since. Its wall
// reading follows from epoch's, so a step of the system's wall clock after
// start does not show in the records.
func (s stamp) time() time.Time { return epoch.Add(time.Duration(s)) }
