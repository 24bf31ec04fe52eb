package reqpool

import (
	"context"
	"errors"
	"fmt"
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
// the class's queue, ErrClosed after Shutdown, ctx.Err() if ctx is already
// done, and a *QueryError for an invalid Query or for a second query on the
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
	n := len(queries)
	if n == 0 {
		return nil
	}
	s := p.sched
	var obs []Observer
	if o := p.observers.Load(); o != nil {
		obs = *o
	}
	if h.timing != nil {
		obs = append(obs[:len(obs):len(obs)], h.timing) // a copy: obs is shared
	}
	if c := h.class; n > c.maxFanout {
		c.tooMany.Add(1)
		recordRefusal(ctx, obs, h.refusal(n, RefusedTooMany))
		if c.maxFanout < p.cfg.MaxFanout {
			return fmt.Errorf("%w: %d queries, class %q fits %d (Workers+QueueSize)", ErrTooManyQueries, n, c.name, c.maxFanout)
		}
		return fmt.Errorf("%w: %d queries, MaxFanout is %d", ErrTooManyQueries, n, p.cfg.MaxFanout)
	}
	if err := checkQueries(queries); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	parent, _ := ctx.Value(groupKey{}).(*group)
	if parent != nil && parent.sched != s {
		parent = nil // another pool's: no slot to borrow
	}

	g := &group{sched: s, parent: parent, queries: queries}
	if obs != nil {
		g.obs, g.reqID, g.admitted = obs, h.id, now()
	}
	g.Context, g.cancel = context.WithCancelCause(ctx)
	defer g.cancel(nil)

	s.mu.Lock()
	if err := h.enter(); err != nil {
		s.mu.Unlock()
		return err
	}
	g.req = h.req
	// A nested caller may borrow its parent's slot while the parent waits, as
	// long as no more callers borrow from the group than it has executing
	// queries (a query could share its context with goroutines of its own).
	lent := parent != nil && parent.lent < parent.executing
	if err := s.admit(g, lent); err != nil {
		s.mu.Unlock()
		if obs != nil && (err == ErrClosed || errors.Is(err, ErrQueueFull)) {
			reason := RefusedQueueFull
			if err == ErrClosed {
				reason = RefusedClosed
			}
			recordRefusal(ctx, obs, h.refusal(n, reason))
		}
		return err
	}
	first, kind := -1, ownSlot
	switch {
	case lent:
		parent.lent++
		first, kind = s.start(g, false), lentSlot
	case s.slots < s.workers && s.firstInLine(g):
		// A slot is free and g's query comes first: the caller runs it
		// itself. (A helper still starting holds a slot of its own, and
		// will take the next query.)
		s.slots++
		first = s.start(g, true)
	}
	s.wake()
	s.mu.Unlock()

	if first >= 0 {
		s.run(kind, g, first, parent)
	}
	return s.wait(g)
}

// wait blocks until none of g's queries is pending and returns the outcome.
// When g's context ends first, the queued queries are dropped at once: the
// handle's AfterFunc does so for the request's end, this does so for a
// Fanout context of its own (a timeout, say) and for a sibling's failure.
func (s *sched) wait(g *group) error {
	s.mu.Lock()
	if g.pending > 0 {
		done := make(chan struct{})
		g.done = done
		s.mu.Unlock()
		select {
		case <-done:
		case <-g.Done():
			s.mu.Lock()
			s.drop(g)
			s.mu.Unlock()
			<-done
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
