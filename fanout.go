package reqpool

import (
	"context"
	"errors"
	"fmt"
	"log"
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
	return h.pool.fanout(ctx, h, queries)
}

func (p *Pool) fanout(ctx context.Context, h *Handle, queries []Query) error {
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
	s := p.sched
	g := s.newGroup(ctx, h, obs, queries)
	defer g.cancel(nil)
	first, kind, err := s.join(g, h)
	if err != nil {
		if obs != nil && (err == ErrClosed || errors.Is(err, ErrQueueFull)) {
			reason := RefusedQueueFull
			if err == ErrClosed {
				reason = RefusedClosed
			}
			recordRefusal(ctx, obs, h.refusal(len(queries), reason))
		}
		return err
	}
	if first >= 0 {
		s.run(kind, g, first, g.parent)
	}
	return s.wait(g)
}

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
	if c, n := h.class, len(queries); n > c.maxFanout {
		c.tooMany.Add(1)
		recordRefusal(ctx, obs, h.refusal(n, RefusedTooMany))
		err := fmt.Errorf("%w: %d queries, MaxFanout is %d", ErrTooManyQueries, n, p.cfg.MaxFanout)
		if c.maxFanout < p.cfg.MaxFanout {
			err = fmt.Errorf("%w: %d queries, class %q fits %d (Workers %d + its QueueSize %d)", ErrTooManyQueries, n, c.name, c.maxFanout, p.cfg.Workers, c.queueSize)
		}
		// It can never run, however idle the pool: a configuration to fix,
		// said once in the log, where the operator looks.
		c.tooManyLogged.Do(func() {
			log.Printf("%v: such a Fanout can never run; raise MaxFanout, or Workers or QueueSize, to at least %d", err, n)
		})
		return err
	}
	if err := checkQueries(queries); err != nil {
		return err
	}
	return ctx.Err()
}
