package reqpool

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/reqpool/reqpool/internal/sched"
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

	// Adaptive makes Workers a ceiling: the pool then moves its limit on
	// queries at once (Stats.Limit) between AdaptiveFloor and Workers,
	// from the run times of its queries, to the fewest that keep the
	// database busy. Past that point more queries at once only wait
	// inside the database, each taking longer, where the pool could order
	// them (fewest remaining first, classes, flows). Every 9th to 33rd
	// window of about a run time it runs one at half the limit, to learn
	// the run time with fewer queries at once. It times every query while
	// the pool runs at its limit and one in eight below it (about 1.05-1.1×
	// a fixed pool's Fanout of 8 no-op queries, BenchmarkFanout8). New
	// rejects it with a Workers of AdaptiveFloor or less. Off by default:
	// the limit is Workers. Experimental: on this project's machine it
	// settles within 1 s of a change of workload, near the best fixed
	// Workers' throughput and small-request p99, but large requests wait
	// longer while it moves (see BenchmarkAdaptivePhases).
	Adaptive bool

	// QueueSize is the most queries that wait at once, process-wide; with
	// Classes, the bound of each class whose Class.QueueSize is 0 (so the
	// pool's bound is then the sum of its classes'). A Fanout whose queries
	// do not fit into the free workers plus the free space of its class's
	// queue fails at once with ErrQueueFull. 0 means DefaultQueueSize (1024).
	// A Fanout of more queries than Workers plus its class's QueueSize can
	// never be admitted, however idle the pool: it fails with
	// ErrTooManyQueries, and the first such Fanout of each class is logged.
	// Keep QueueSize at least the largest Fanout minus Workers.
	QueueSize int

	// PerRequest is the most queries one request (one handle) executes at
	// once, so that a single large fan-out cannot take every worker even when
	// it is alone. 0 means no cap: an idle pool runs a lone request at full
	// width.
	PerRequest int

	// MaxFanout is the most queries one Fanout call may have; more gives
	// ErrTooManyQueries. 0 means DefaultMaxFanout (128), lowered to
	// Workers+QueueSize (with Classes, the largest class queue) when that is
	// smaller. A larger explicit value is rejected, since such a Fanout could
	// never fit. A class whose queue is smaller refuses, with
	// ErrTooManyQueries, a Fanout of more than Workers plus its QueueSize.
	MaxFanout int

	// SpareConns is how many connections OpenPostgres and reqpgx.Open (and
	// SizeDB) allow the database handle beyond Workers, for the statements
	// that the application runs outside Fanout: handlers not yet moved to
	// Fanout, an authentication middleware's lookup, health checks. Fanout's
	// queries never take more than Workers, so with SpareConns at least the
	// statements that run at once outside Fanout, those never wait for a
	// connection, however busy the pool. 0 means the package's SpareConns
	// (2).
	SpareConns int

	// RetryAfter is the delay that WriteError advertises in the Retry-After
	// header of a 503 answer, rounded up to whole seconds. 0 means
	// DefaultRetryAfter (1s).
	RetryAfter time.Duration

	// ServerTiming makes Middleware add a Server-Timing header to each
	// response, with three figures in milliseconds, each with a desc,
	// for the queries done when the response's header went out:
	//
	//	reqpool       the wall time during which the request had queries
	//	              waiting or running: at most the request's duration
	//	reqpool-wait  their queue wait, summed over the queries
	//	reqpool-run   their run time, summed over the queries
	//
	// The sums exceed the wall time when queries run in parallel: 4
	// queries of 2 s in parallel give reqpool 2000, reqpool-run 8000.
	// Browsers' developer tools show the three. Off by default: it costs
	// each query of a request a clock read and a lock of the request's
	// own, and each request a wrapped ResponseWriter (about 3 µs a request
	// in BenchmarkServerTiming).
	ServerTiming bool

	// ProblemDetails makes WriteError answer with problem details (RFC
	// 9457, application/problem+json) instead of text/plain, for JSON APIs.
	// Either way the body holds the status alone, never the error's text.
	ProblemDetails bool

	// DisableSQLComment stops Select, Get, Exec and ExecResult from tagging
	// their statements with the request id. By default (false) each
	// statement ends with a sqlcommenter comment, /*request_id='…'*/, that
	// shows in pg_stat_activity and the server's logs. The comment does not
	// change the statement's query id in pg_stat_statements.
	DisableSQLComment bool

	// RequestID gives Middleware each request's id, when the application
	// has one already: the id of a request-id middleware in front (chi's
	// middleware.GetReqID), a trace id, its own policy's. A non-empty answer
	// is the request's id, set in the response's X-Request-ID header and in
	// the statements' tag as Middleware's own ids are, if it is 1 to 128
	// printable ASCII characters without spaces (the tag percent-encodes
	// it, so no id changes the SQL); an empty or other answer falls back to
	// the X-Request-ID header, as without RequestID. nil means the header.
	RequestID func(r *http.Request) string `json:"-"`

	// Classes divides the workers among priority classes, each with its
	// share and its own queue (see Class, and Scheduling on Pool). Empty
	// means one class, named "", as if there were no classes. New rejects
	// an empty or duplicate Name and a negative Share or QueueSize.
	Classes []Class

	// Classify gives Middleware each request's class and flow. A class of ""
	// is the first of Classes. A class that is not in Classes makes the
	// request's Fanout calls fail with an error wrapping ErrUnknownClass
	// (WriteError answers 500), never run the queries in another class.
	//
	// A flow names what should share the class's workers equally with its
	// peers, however many requests it sends: a tenant, a user, an API key.
	// A flow of "" leaves the request on its own, as without Classify: the
	// class's flowless requests are ordered among themselves as the pool
	// orders requests (fewest remaining first, with aging), and together
	// take one flow's part of the class. Flows are kept only while they
	// have requests, so naming them by something unbounded is safe.
	//
	// nil means every request is flowless in the first class. A nested
	// Fanout is its request's, and so of its class and flow.
	Classify func(r *http.Request) (class, flow string) `json:"-"`
}

// AdaptiveFloor is the lowest limit of an adaptive pool (Config.Adaptive):
// two queries at once, so that one query's round trip to the database
// never leaves it idle.
const AdaptiveFloor = 2

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
		{"SpareConns", int64(c.SpareConns)},
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
	if c.Adaptive && c.Workers <= AdaptiveFloor {
		return c, fmt.Errorf("%w: Adaptive with Workers %d: the limit moves between AdaptiveFloor (%d) and Workers, so Workers must be above it",
			ErrInvalidConfig, c.Workers, AdaptiveFloor)
	}
	if c.QueueSize > math.MaxInt32-c.Workers {
		return c, fmt.Errorf("%w: Workers+QueueSize is %d+%d, above %d", ErrInvalidConfig, c.Workers, c.QueueSize, math.MaxInt32)
	}
	classes, err := c.classesWithDefaults()
	if err != nil {
		return c, err
	}
	c.Classes = classes
	fits := c.Workers + c.largestQueue()
	if c.MaxFanout == 0 {
		c.MaxFanout = min(DefaultMaxFanout, fits)
	}
	if c.MaxFanout > fits {
		return c, fmt.Errorf("%w: MaxFanout %d exceeds Workers plus the largest queue bound (%d): such a Fanout could never be admitted",
			ErrInvalidConfig, c.MaxFanout, fits)
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.SpareConns == 0 {
		c.SpareConns = SpareConns
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
// handle), in three steps. A worker slot that frees up goes:
//
//  1. to the class (Config.Classes) with queries waiting that is furthest
//     below its share: the fewest executing for its Share;
//  2. in that class, to the flow (Config.Classify) with queries waiting
//     that has the fewest executing, so that flows share their class's
//     workers equally, however many requests each sends;
//  3. in that flow, to the next query of the ready request with the
//     smallest key, as below.
//
// Ties at the first two steps go to the class or flow whose turn came
// longest ago. Without Classes and Classify there is one class and one
// flow, and only the third step is left.
//
// Inside a flow, the key of a request is
//
//	key = arrival + remaining × Workers
//
// remaining counts the request's queries queued or executing (with
// Config.Adaptive, they count at the adaptive limit instead of Workers, so
// that the aging below keeps its pace while the limit is down), and arrival is
// the flow's count of completed queries when the request's oldest queued
// Fanout was admitted (for a pool without classes and flows, the pool's
// count, Stats.Completed). That count is the scheduler's clock: it runs at the pace
// of the flow's own work, so the policy needs no tuning to the queries'
// duration and reads no wall clock.
//
// Without the arrival term this is "fewest remaining first", the usual
// approximation of shortest-remaining-processing-time, which minimises mean
// latency: a request of 2 queries does not wait behind the 160 of another,
// and of two requests that both have to queue, the one nearer completion
// finishes first. The arrival term is the aging that keeps large requests
// from starving: a request with n queries left is overtaken only by requests
// that arrive before its flow completes n × Workers more queries (about n
// query times while the flow has every worker, longer in proportion to the
// part of the workers it has), and its key only shrinks as it runs. Past that
// point only requests already queued can go first, and the class's queue
// holds at most its QueueSize queries. So a Fanout of n queries, alone on
// its handle, is done once at most n×Workers + QueueSize + n + Workers
// queries of its flow have completed after its admission, however many
// requests keep arriving (TestNoStarvation checks this bound). Ties go to
// the request registered first (at its first Fanout). Within a request, its
// Fanout calls run in the order they were made, and a call's queries in
// argument order.
//
// The first two steps share workers, not turns: a class or flow holds its
// share for as long as its queries run, so their bounds count from the
// moment it has nothing executing. A class with queries waiting and none
// executing starts one within K starts in slots of their own (K classes):
// only a class that also has none executing and whose turn came earlier can
// go first, and each only once. A flow with queries waiting and none
// executing starts one within F starts of its class (F flows of the class
// with queries waiting), for the same reason (TestSchedClassBound,
// TestSchedFlowBound). Starts follow completions, since the pool is
// work-conserving. So a Fanout of n queries, alone on its handle, is done
// once its flow has completed the n×Workers + QueueSize + n + Workers
// queries above, and its flow and class are never left without a query
// executing for more than those F and K starts: no class with work and no
// flow with work waits forever while queries end. What a class or flow is
// not promised is more than its share while the others' queries run long.
//
// The scheduler's invariants are stated beside its fields, in package
// internal/sched.
//
// There are no long-lived worker goroutines. A Fanout caller that finds a
// free slot runs its own queries (it would block anyway, and this saves a
// handoff); further free slots get helper goroutines, started one at a time,
// each starting the next once it has taken a query. A slot holder that finds
// nothing to run gives its slot back and, if it was a helper, exits.
type Pool struct {
	cfg       Config                       // normalised by withDefaults; read-only after New
	sched     *sched.Sched                 // the scheduler, with the mutex that guards its state
	observers atomic.Pointer[[]Observer]   // attached by Observe; nil when none; replaced, never changed in place
	debug     atomic.Pointer[debugHandler] // made by the first DebugHandler call, which attaches its Observer; see debug.go

	// closing ends when Shutdown returns (shuttingDown), and with it the
	// contexts of Detach.
	closing      context.Context
	shuttingDown context.CancelFunc
}

// New returns a Pool configured by cfg, or an error wrapping ErrInvalidConfig.
func New(cfg Config) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, sched: sched.New(cfg.schedConfig())}
	p.closing, p.shuttingDown = context.WithCancel(context.Background())
	return p, nil
}

// Config returns the pool's configuration with the defaults filled in.
func (p *Pool) Config() Config {
	c := p.cfg
	c.Classes = slices.Clone(c.Classes) // the caller's to change
	return c
}

// Stats.LimitReason's values.
const (
	LimitConnections = "connections" // a connection shortage
	LimitAdaptive    = "adaptive"    // the adaptive limit (Config.Adaptive)
)

// Stats is a snapshot of a pool. The fields up to LimitReason are gauges,
// the rest cumulative counters since New.
type Stats struct {
	Workers  int // Config.Workers
	Running  int // queries executing now in slots of their own (not nested ones in a borrowed slot)
	Queued   int // queries admitted and waiting to start
	Requests int // live handles that have fanned out: not yet released, and registered by a Fanout

	// Limit is the most queries that execute at once now: Workers, the
	// adaptive limit with Config.Adaptive, or fewer while a database
	// opened by OpenPostgres or reqpgx.Open refuses
	// new connections for lack of slots (PostgreSQL's max_connections or a
	// role's CONNECTION LIMIT, PgBouncer's max_client_conn) but the
	// connections open work. Queries beyond it wait in the queue. The
	// opener probes for a connection more every 250 ms while they are
	// refused, and one after the other once they succeed: Limit grows back
	// with each. LimitReason says why Limit is below Workers. Just
	// after Limit drops, Running can exceed it until enough queries end. The
	// openers count established connections in the protocol's bytes, so
	// over TLS they cannot, and a shortage is met as an outage.
	Limit       int
	LimitReason string // "", LimitConnections or LimitAdaptive

	Submitted uint64 // queries admitted by Fanout
	Completed uint64 // queries that ran to the end, whatever they returned
	Failed    uint64 // of Completed, those that returned an error or panicked while their Fanout's context was live
	Cancelled uint64 // of Completed, those that returned an error once their Fanout's context had ended: hang-up, deadline, a sibling failed, or Shutdown
	Dropped   uint64 // admitted queries that never started, for the reasons that cancel them
	Rejected  uint64 // Fanout calls refused with ErrQueueFull, ErrTooManyQueries or ErrClosed

	// Classes has the same figures for each class, in Config.Classes'
	// order; the pool's are their sums. Without Classes, it has one entry,
	// named "".
	Classes []ClassStats
}

// Stats returns a snapshot of the pool's gauges and counters.
func (p *Pool) Stats() Stats {
	ss := p.sched.Stats()
	st := Stats{Workers: p.cfg.Workers, Running: ss.Running, Queued: ss.Queued, Requests: ss.Requests, Limit: ss.Limit,
		Classes: make([]ClassStats, len(ss.Classes))}
	switch {
	case ss.ConnLimited:
		st.LimitReason = LimitConnections
	case st.Limit < st.Workers:
		st.LimitReason = LimitAdaptive
	}
	classes := p.cfg.classes()
	for i, c := range ss.Classes {
		n := c.Counts
		st.Classes[i] = ClassStats{Name: classes[i].Name, Running: c.Running, Queued: c.Queued, Flows: c.Flows,
			Submitted: n.Submitted, Completed: n.Completed, Failed: n.Failed, Cancelled: n.Cancelled, Dropped: n.Dropped, Rejected: n.Rejected}
		st.Submitted += n.Submitted
		st.Completed += n.Completed
		st.Failed += n.Failed
		st.Cancelled += n.Cancelled
		st.Dropped += n.Dropped
		st.Rejected += n.Rejected
	}
	return st
}

// Shutdown closes the pool: from now on Fanout fails with ErrClosed.
// Admitted queries go on to completion, and Shutdown returns nil once the
// pool is idle. If ctx ends first, Shutdown cancels the context of every
// admitted Fanout (with a cause matching both ErrClosed and
// context.Canceled), drops every queued query and returns ctx.Err() at once,
// as http.Server.Shutdown does. A query that ignores its context then goes
// on running in its slot: Stats shows it in Running until it returns, and
// its Fanout returns only then.
//
// With net/http, shut the server down first, so that handlers stop calling
// Fanout, then the pool, in this order only:
//
//	err := srv.Shutdown(ctx) // waits for handlers, and with them their Fanouts
//	err = errors.Join(err, pool.Shutdown(ctx))
//
// The other order, or a pool.Shutdown run from srv.RegisterOnShutdown, fails
// the Fanouts of requests still being served (503): one measured deploy
// refused a handler's second Fanout 530 ms into a 3 s budget that the
// server-first order would have served in full.
//
// Shutdown may be called again: after one that ran out of time, another
// waits (as long as its own ctx allows) until the queries it cancelled have
// returned, which is how to know that nothing of the pool runs any more.
// Shutdown ends the contexts of Detach when it returns: work detached from
// a request, like a request, has until the pool is idle or ctx ends.
func (p *Pool) Shutdown(ctx context.Context) error {
	select {
	case <-p.sched.Close():
		p.shuttingDown() // Detach's contexts: the pool is closed to them
		return nil
	case <-ctx.Done():
	}
	p.shuttingDown()
	p.sched.CancelAll(errShutdown)
	return ctx.Err()
}
