package reqpool

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Defaults used for the zero values of Config's fields.
const (
	DefaultWorkers    = 16
	DefaultQueueSize  = 1024
	DefaultMaxFanout  = 128
	DefaultRetryAfter = time.Second
)

// Config configures a Pool. The zero value is valid: every field documents
// what its zero means. Negative values are rejected by New.
type Config struct {
	// Workers is the most queries that execute at once, process-wide. Since
	// each query holds a database connection while it runs, it also bounds
	// the connections the pool uses. 0 means DefaultWorkers (16).
	Workers int

	// QueueSize is the most queries that wait at once, process-wide. A Fanout
	// whose queries do not fit into the free workers plus the free queue space
	// fails at once with ErrQueueFull. 0 means DefaultQueueSize (1024).
	QueueSize int

	// PerRequest is the most queries one request (one handle) executes at
	// once, so that a single large fan-out cannot take every worker even when
	// it is alone. 0 means no cap: an idle pool runs a lone request at full
	// width.
	PerRequest int

	// MaxFanout is the most queries one Fanout call may have; more gives
	// ErrTooManyTasks. 0 means DefaultMaxFanout (128), lowered to
	// Workers+QueueSize when that is smaller. A larger explicit value than
	// Workers+QueueSize is rejected, since such a Fanout could never fit.
	MaxFanout int

	// RetryAfter is the delay that WriteError advertises in the Retry-After
	// header of a 503 answer, rounded up to whole seconds. 0 means
	// DefaultRetryAfter (1s).
	RetryAfter time.Duration

	// DisableSQLComment stops Select, Get, Exec and ExecResult from tagging
	// their statements with the request id. By default (false) each
	// statement ends with a sqlcommenter comment, /*request_id='…'*/, that
	// shows in pg_stat_activity and the server's logs. The comment does not
	// change the statement's query id in pg_stat_statements.
	DisableSQLComment bool
}

// withDefaults validates c and fills in its zero fields.
func (c Config) withDefaults() (Config, error) {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Workers", int64(c.Workers)},
		{"QueueSize", int64(c.QueueSize)},
		{"PerRequest", int64(c.PerRequest)},
		{"MaxFanout", int64(c.MaxFanout)},
		{"RetryAfter", int64(c.RetryAfter)},
	} {
		if f.v < 0 {
			return c, fmt.Errorf("%w: %s is %d, want >= 0", ErrInvalidConfig, f.name, f.v)
		}
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxFanout == 0 {
		c.MaxFanout = min(DefaultMaxFanout, c.Workers+c.QueueSize)
	}
	if c.MaxFanout > c.Workers+c.QueueSize {
		return c, fmt.Errorf("%w: MaxFanout %d exceeds Workers+QueueSize (%d): such a Fanout could never be admitted",
			ErrInvalidConfig, c.MaxFanout, c.Workers+c.QueueSize)
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	return c, nil
}

// Pool is the process-wide bounded pool that every request's Fanout shares.
// Create one with New, hand requests their handles with Middleware (or
// NewContext outside HTTP), and stop it with Shutdown. A Pool is safe for
// concurrent use.
//
// # Scheduling
//
// Work is admitted per Fanout call (a group) and scheduled per request (a
// handle). A worker slot that frees up takes the next query of the ready
// request with the smallest key, where
//
//	key = arrival + remaining × Workers
//
// remaining counts the request's queries queued or executing, and arrival is
// the pool's count of completed queries (Stats.Completed) when the request's
// oldest queued Fanout was admitted. That count is the scheduler's clock: it
// runs at the pace of the pool's own work, Workers completions taking about
// one query's time at full load, so the policy needs no tuning to the
// queries' duration and reads no wall clock.
//
// Without the arrival term this is "fewest remaining first", the usual
// approximation of shortest-remaining-processing-time, which minimises mean
// latency: a request of 2 queries does not wait behind the 160 of another,
// and of two requests that both have to queue, the one nearer completion
// finishes first. The arrival term is the aging that keeps large requests
// from starving: a request with n queries left is overtaken only by requests
// that arrive before the pool completes n × Workers more queries (at full
// load, about n query times), and its key only shrinks as it runs. Past that
// point only requests already queued can go first, and the queue holds at
// most QueueSize queries. So a Fanout of n queries, alone on its handle, is
// done once at most n×Workers + QueueSize + n + Workers queries have
// completed after its admission, however many requests keep arriving
// (TestNoStarvation checks this bound). Ties go to the request created
// first. Within a request, its Fanout calls run in the order they were made,
// and a call's queries in argument order.
//
// Invariants, all under mu:
//   - running <= Workers: every executing query holds a slot, counted in
//     running. A nested Fanout's caller is the exception that proves the rule:
//     it runs its queries in the slot its parent query holds (see fanout).
//   - A slot is free (running < Workers) only while no request is ready, or
//     while a helper goroutine is starting (spawning > 0) to take the work:
//     the pool is work-conserving.
//   - ready holds exactly the handles that have queued queries and are below
//     their PerRequest cap, ordered by key.
//   - queued is the sum of the handles' queued counts, and a handle's queued
//     count is the sum of its groups' unstarted queries.
//   - A group whose context is done never starts another query: pop drops it.
//
// There are no long-lived worker goroutines. A Fanout caller that finds a
// free slot runs its own queries (it would block anyway, and this saves a
// handoff); further free slots get helper goroutines, started one at a time,
// each starting the next once it has taken a query. A slot holder that finds
// nothing to run gives its slot back and, if it was a helper, exits.
type Pool struct {
	cfg Config // normalised by withDefaults; read-only after New

	mu        sync.Mutex           // protects the fields below and the scheduling fields of every Handle and group
	running   int                  // slots in use: executing queries, slot-holding callers between queries, starting helpers
	executing int                  // queries executing in counted slots (Stats.Running)
	spawning  int                  // helpers started and not yet holding a query
	queued    int                  // admitted queries not yet started
	ready     readyHeap            // handles with queued queries below their PerRequest cap, smallest key first
	handles   map[*Handle]struct{} // live handles, for Shutdown and Stats.Requests
	closed    bool                 // Shutdown was called
	seq       uint64               // handles created, for Handle.seq
	idle      chan struct{}        // closed by signalIdle once closed with nothing queued or running; nil until Shutdown
	stats     Stats                // cumulative counters
}

// New returns a Pool configured by cfg, or an error wrapping ErrInvalidConfig.
func New(cfg Config) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Pool{cfg: cfg, handles: make(map[*Handle]struct{})}, nil
}

// Config returns the pool's configuration with the defaults filled in.
func (p *Pool) Config() Config { return p.cfg }

// Stats is a snapshot of a pool. The first four fields are gauges, the rest
// cumulative counters since New.
type Stats struct {
	Workers  int // Config.Workers
	Running  int // queries executing now
	Queued   int // queries admitted and waiting to start
	Requests int // live handles: requests inside Middleware, contexts from NewContext not yet released

	Submitted uint64 // queries admitted by Fanout
	Completed uint64 // queries that ran to the end, whatever they returned
	Failed    uint64 // of Completed, those that returned an error or panicked
	Dropped   uint64 // admitted queries that never started: context done, a sibling failed, or Shutdown
	Rejected  uint64 // Fanout calls refused with ErrQueueFull, ErrTooManyTasks or ErrClosed
}

// Stats returns a snapshot of the pool's gauges and counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Workers = p.cfg.Workers
	s.Running = p.executing
	s.Queued = p.queued
	s.Requests = len(p.handles)
	return s
}

// Shutdown closes the pool: from now on Fanout fails with ErrClosed. Admitted
// queries go on to completion; if ctx ends first, Shutdown cancels the
// context of every live handle, drops every queued query, and waits for the
// executing ones to return, then returns ctx.Err(). Either way it returns
// only once the pool is idle, so a query that ignores its context delays it.
// It returns nil when the work finished before ctx ended.
//
// With net/http, shut the server down first, so that handlers stop calling
// Fanout, then the pool:
//
//	err := srv.Shutdown(ctx) // waits for handlers, and with them their Fanouts
//	err = errors.Join(err, pool.Shutdown(ctx))
//
// or, to have the pool refuse new fan-outs the moment the server starts
// shutting down, srv.RegisterOnShutdown(func() { pool.Shutdown(ctx) }).
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	if p.idle == nil {
		p.idle = make(chan struct{})
		p.signalIdle()
	}
	idle := p.idle
	p.mu.Unlock()

	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	for h := range p.handles {
		h.cancel(errShutdown)
		p.abandon(h)
	}
	p.mu.Unlock()
	<-idle
	return ctx.Err()
}

// signalIdle closes idle once the pool is closed and has no work left.
// Callers hold mu.
func (p *Pool) signalIdle() {
	if p.idle != nil && p.running == 0 && p.queued == 0 {
		select {
		case <-p.idle:
		default:
			close(p.idle)
		}
	}
}

// admit enqueues g, or returns why it cannot. free is how many queries may
// start at once without queueing: the free slots usable by g's handle, plus
// the lent slot of a nested caller. Callers hold mu.
func (p *Pool) admit(g *group, lent bool) error {
	h, n := g.h, len(g.queries)
	switch {
	case p.closed:
		p.stats.Rejected++
		return ErrClosed
	case h.released:
		// The handle's context is already cancelled; report it as such.
		return context.Canceled
	}
	free := p.cfg.Workers - p.running
	if c := p.cfg.PerRequest; c > 0 {
		free = min(free, c-h.running)
	}
	free = max(free, 0)
	if lent {
		free++
	}
	if p.queued+n > p.cfg.QueueSize+free {
		p.stats.Rejected++
		return fmt.Errorf("%w: %d queries do not fit (%d queued, QueueSize %d, %d free workers)",
			ErrQueueFull, n, p.queued, p.cfg.QueueSize, free)
	}
	g.arrival = p.stats.Completed
	h.push(g)
	h.queued += n
	p.queued += n
	p.stats.Submitted += uint64(n)
	p.rekey(h)
	return nil
}

// rekey restores h's key and its place in (or out of) ready after any change
// to its queued or running counts or to its groups. Only a handle with queued
// queries has a key, from the arrival of its oldest queued group: a
// long-lived handle (a job's) that always has some work does not keep the
// arrival of its first Fanout forever. Callers hold mu.
func (p *Pool) rekey(h *Handle) {
	eligible := h.queued > 0 && (p.cfg.PerRequest == 0 || h.running < p.cfg.PerRequest)
	if h.head != nil {
		h.key = h.head.arrival + uint64(h.queued+h.running)*uint64(p.cfg.Workers)
	}
	switch {
	case eligible && h.index < 0:
		heap.Push(&p.ready, h)
	case eligible:
		heap.Fix(&p.ready, h.index)
	case h.index >= 0:
		heap.Remove(&p.ready, h.index)
	}
}

// pop starts the best ready query and returns it, or returns nil when no
// request is ready. The caller must hold a slot. Callers hold mu.
func (p *Pool) pop() (*group, int) {
	for p.ready.Len() > 0 {
		g := p.ready[0].head
		if g.Err() != nil {
			p.drop(g)
			continue
		}
		return g, p.start(g, true)
	}
	return nil, -1
}

// start takes g's next queued query. counted says whether it runs in a slot
// of its own (false: in a slot lent by its parent). Callers hold mu.
func (p *Pool) start(g *group, counted bool) int {
	h := g.h
	i := g.started
	g.started++
	g.executing++
	if g.started == len(g.queries) {
		h.unlink(g)
	}
	h.queued--
	p.queued--
	if counted {
		h.running++
		p.executing++
	}
	p.rekey(h)
	return i
}

// finish records the end of query i of g. Callers hold mu.
func (p *Pool) finish(g *group, i int, err error, counted bool) {
	h := g.h
	g.executing--
	g.pending--
	p.stats.Completed++
	if counted {
		h.running--
		p.executing--
	}
	if err != nil {
		p.stats.Failed++
		if g.err == nil {
			qe := &QueryError{Index: i, Err: err}
			if g.Err() != nil { // the caller's context ended: say so, whatever the driver said
				if cause := context.Cause(g); !errors.Is(err, cause) {
					qe.ctx = cause
				}
			}
			g.err = qe
			g.cancel(qe)
			p.drop(g)
		}
	}
	p.rekey(h)
	g.signal()
	if h.running == 0 && h.drained != nil {
		close(h.drained)
		h.drained = nil
	}
}

// drop removes g's queued queries: they never start. Callers hold mu.
func (p *Pool) drop(g *group) {
	k := len(g.queries) - g.started
	if k == 0 {
		return
	}
	h := g.h
	h.unlink(g)
	g.started = len(g.queries)
	g.pending -= k
	g.dropped = true
	h.queued -= k
	p.queued -= k
	p.stats.Dropped += uint64(k)
	p.rekey(h)
	g.signal()
	p.signalIdle()
}

// abandon drops every queued query of h. Callers hold mu.
func (p *Pool) abandon(h *Handle) {
	for h.head != nil {
		p.drop(h.head)
	}
}

// wake starts a helper goroutine when a slot is free and a request is ready.
// Helpers start one at a time: each calls wake again once it holds a query,
// so a burst of no-op queries costs one goroutine, not one per free slot.
// Callers hold mu.
func (p *Pool) wake() {
	if p.spawning == 0 && p.running < p.cfg.Workers && p.ready.Len() > 0 {
		p.running++
		p.spawning++
		go p.work()
	}
}

// release gives back a slot held by a caller that has nothing more of its
// own to run. If a request is ready, the slot passes to a new helper instead.
// Callers hold mu.
func (p *Pool) release() {
	if p.ready.Len() > 0 {
		p.spawning++
		go p.work()
		return
	}
	p.running--
	p.signalIdle()
}

// work is a helper goroutine. It owns one slot, counted in running when it
// was started, and runs the best ready query until none is left.
func (p *Pool) work() {
	var (
		g    *group
		i    int
		done bool
	)
	p.mu.Lock()
	p.spawning--
	defer func() {
		if !done { // the query called runtime.Goexit: this goroutine is ending
			p.mu.Lock()
			p.finish(g, i, errGoexit, true)
			p.running--
			p.wake()
			p.signalIdle()
			p.mu.Unlock()
		}
	}()
	for g, i = p.pop(); g != nil; g, i = p.pop() {
		p.wake()
		p.mu.Unlock()
		err := g.call(i)
		p.mu.Lock()
		p.finish(g, i, err, true)
	}
	p.running--
	p.signalIdle()
	done = true
	p.mu.Unlock()
}

// readyHeap orders ready handles by key, then by arrival order for equal
// keys (seq), so that ties are first come, first served.
type readyHeap []*Handle

func (r readyHeap) Len() int { return len(r) }
func (r readyHeap) Less(i, j int) bool {
	if r[i].key != r[j].key {
		return r[i].key < r[j].key
	}
	return r[i].seq < r[j].seq
}
func (r readyHeap) Swap(i, j int) {
	r[i], r[j] = r[j], r[i]
	r[i].index = i
	r[j].index = j
}
func (r *readyHeap) Push(x any) {
	h := x.(*Handle)
	h.index = len(*r)
	*r = append(*r, h)
}
func (r *readyHeap) Pop() any {
	old := *r
	h := old[len(old)-1]
	old[len(old)-1] = nil
	h.index = -1
	*r = old[:len(old)-1]
	return h
}
