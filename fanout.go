package reqpool

import (
	"context"
	"log"

	"github.com/reqpool/reqpool/internal/sched"
)

// Fanout runs queries in parallel on the pool of the handle in ctx, and waits
// for all of them. It returns nil when all succeeded.
//
// The first query to fail cancels the context of the others and drops those
// not yet started; Fanout returns that failure as a *QueryError, whose Unwrap
// gives the query's own error. A panicking query fails with a *PanicError.
// If ctx ends while queries are still queued, they are dropped and Fanout
// returns context.Cause(ctx), or the failure of a query if one failed first,
// which then also matches the context's cause. When Fanout returns, none of
// its queries is executing or will start, so the caller may read whatever
// they wrote.
//
// Fanout fails at once, running nothing, with ErrNoHandle if ctx carries no
// handle, ErrUnknownClass if Config.Classify put the request in a class the
// pool does not have, ErrTooManyQueries above Config.MaxFanout queries (or
// above Workers plus the QueueSize of the request's class), ErrQueueFull if
// the queries do not all fit into the free workers and the free space of
// the class's queue, ErrClosed after Shutdown, ErrHandleReleased on a
// handle that was released (its handler returned), ctx.Err() if ctx is
// already done, and a *QueryError for an invalid Query or for a second query on the
// same transaction or connection (wrapping ErrSharedConn).
//
// A query that calls runtime.Goexit (t.FailNow in a test) fails its
// Fanout as an error would, cancelling its siblings. If it ran on the
// Fanout caller's own goroutine (a caller runs its own queries while a slot
// is free), that goroutine ends, as Goexit demands, and Fanout does not
// return; Middleware still releases the request, and net/http closes the
// connection without an answer.
//
// A query may call Fanout itself with its own context: the nested queries
// then run in the slot of the query that waits for them, so nesting cannot
// deadlock even when every worker is such a parent. A nested Fanout made
// with another context (the request's, say) has no slot to borrow and may
// deadlock a full pool.
func Fanout(ctx context.Context, queries ...Query) error {
	h, ok := FromContext(ctx)
	if !ok {
		return ErrNoHandle
	}
	return h.pool.runFanout(ctx, h, queries)
}

// runFanout is Fanout on h, ctx's handle: checked, admitted or refused by
// the scheduler as a whole, then run and waited for.
func (p *Pool) runFanout(ctx context.Context, h *Handle, queries []Query) error {
	if h.err != nil {
		return h.err // Classify named an unknown class
	}
	if len(queries) == 0 {
		return nil
	}
	obs := p.observersOf(h)
	if err := p.check(ctx, h, obs, queries); err != nil {
		return err
	}
	c := &fanoutCall{h: h, queries: queries, obs: obs}
	p.sched.Init(&c.Group, ctx, c, len(queries), obs != nil)
	ref, ok := p.sched.Admit(&c.Group, &h.member)
	if ok {
		return p.sched.Await(&c.Group)
	}
	return refuse(ctx, h, obs, len(queries), ref)
}

// fanoutCall is one Fanout: its group in the scheduler, which is also its
// queries' context, and what the scheduler runs and tells of each query's
// end (sched.Work; Ended is in observe.go).
type fanoutCall struct {
	sched.Group
	h       *Handle
	queries []Query
	obs     []Observer // the Fanout's observers (observersOf); nil when there are none
}

// Run implements sched.Work.
func (c *fanoutCall) Run(ctx context.Context, i int) error { return c.queries[i].run(ctx) }

// observersOf returns the observers of a Fanout of h: the pool's, and h's
// Server-Timing recorder; nil if there are none.
func (p *Pool) observersOf(h *Handle) []Observer {
	var obs []Observer
	if o := p.observers.Load(); o != nil {
		obs = *o
	}
	if h.timing != nil {
		obs = append(obs[:len(obs):len(obs)], h.timing) // a copy: obs is shared
	}
	return obs
}

// check returns why a Fanout of queries on h must fail before it is
// admitted: too many queries for h's class, an invalid query, or ctx done.
func (p *Pool) check(ctx context.Context, h *Handle, obs []Observer, queries []Query) error {
	c, n := h.member.Class, len(queries)
	if tooMany, first := c.TooMany(n); tooMany {
		recordRefusal(ctx, obs, h.refusal(n, RefusedTooMany))
		err := p.tooManyError(c, n)
		if first {
			// It can never run, however idle the pool: a configuration to
			// fix, said once a class in the log, where the operator looks.
			log.Printf("%v: such a Fanout can never run; raise MaxFanout, or Workers or QueueSize, to at least %d", err, n)
		}
		return err
	}
	if err := checkQueries(queries); err != nil {
		return err
	}
	return ctx.Err()
}

// refuse returns the error of a Fanout of n queries on h that the
// scheduler refused (ref), and tells obs of it: the error is built here,
// outside the scheduler's lock.
func refuse(ctx context.Context, h *Handle, obs []Observer, n int, ref sched.Refusal) error {
	var err error
	reason := RefusedQueueFull
	switch ref.Reason {
	case sched.RefusedReleased:
		return errReleased // the handle's request is over: not a refusal of load
	case sched.RefusedClosed:
		err, reason = ErrClosed, RefusedClosed
	default:
		err = &queueFullError{ref}
	}
	recordRefusal(ctx, obs, h.refusal(n, reason))
	return err
}
