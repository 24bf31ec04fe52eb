package reqpool

import (
	"context"
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
// handle, ErrTooManyTasks above Config.MaxFanout queries, ErrQueueFull if
// the queries do not all fit into the free workers and the free queue space,
// ErrClosed after Shutdown, ctx.Err() if ctx is already done, and a
// *QueryError for an invalid Query or for a second query on the same
// transaction or connection (wrapping ErrSharedConn).
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

// group is one Fanout call. It is also the context its queries receive: the
// embedded context is cancelled on the first failure, and Value answers
// groupKey with the group itself, which is how a nested Fanout finds the
// slot it may borrow.
type group struct {
	context.Context
	cancel  context.CancelCauseFunc
	h       *Handle
	queries []Query

	// Guarded by pool.mu.
	arrival    uint64        // the pool's Stats.Completed when g was admitted
	started    int           // queries[started:] are queued
	pending    int           // queries neither finished nor dropped
	executing  int           // queries executing, in any slot
	lent       int           // nested Fanout callers running in the slots of executing queries
	dropped    bool          // some queries were dropped unstarted
	err        error         // the first failure, a *QueryError
	done       chan struct{} // closed when pending reaches 0; nil until the caller waits
	prev, next *group        // in h's list of groups with queued queries
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

// signal wakes the waiting caller once nothing is pending. Callers hold
// pool.mu.
func (g *group) signal() {
	if g.pending == 0 && g.done != nil {
		close(g.done)
		g.done = nil
	}
}

// push appends g to h's groups. Callers hold pool.mu.
func (h *Handle) push(g *group) {
	g.prev = h.tail
	if h.tail != nil {
		h.tail.next = g
	} else {
		h.head = g
	}
	h.tail = g
}

// unlink removes g from h's groups once it has nothing queued. Callers hold
// pool.mu.
func (h *Handle) unlink(g *group) {
	if g.prev != nil {
		g.prev.next = g.next
	} else {
		h.head = g.next
	}
	if g.next != nil {
		g.next.prev = g.prev
	} else {
		h.tail = g.prev
	}
	g.prev, g.next = nil, nil
}

func (p *Pool) fanout(ctx context.Context, h *Handle, queries []Query) error {
	n := len(queries)
	if n == 0 {
		return nil
	}
	if n > p.cfg.MaxFanout {
		p.mu.Lock()
		p.stats.Rejected++
		p.mu.Unlock()
		return fmt.Errorf("%w: %d queries, MaxFanout is %d", ErrTooManyTasks, n, p.cfg.MaxFanout)
	}
	if err := checkQueries(queries); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	parent, _ := ctx.Value(groupKey{}).(*group)
	if parent != nil && parent.h.pool != p {
		parent = nil
	}

	g := &group{h: h, queries: queries, pending: n}
	g.Context, g.cancel = context.WithCancelCause(ctx)
	defer g.cancel(nil)

	p.mu.Lock()
	// A nested caller may borrow its parent's slot while the parent waits, as
	// long as no more callers borrow from the group than it has executing
	// queries (a query could share its context with goroutines of its own).
	lent := parent != nil && parent.lent < parent.executing
	if err := p.admit(g, lent); err != nil {
		p.mu.Unlock()
		return err
	}
	first := -1
	switch {
	case lent:
		parent.lent++
		first = p.start(g, false)
	case p.running < p.cfg.Workers && h.index >= 0:
		// A slot is free, so nothing else is ready (the pool is
		// work-conserving): the caller runs its own first query.
		p.running++
		first = p.start(g, true)
	}
	p.wake()
	p.mu.Unlock()

	if first >= 0 {
		p.runOwn(g, first, parent, lent)
	}
	return p.wait(ctx, g)
}

// runOwn runs query i of g and then further queries of g on the calling
// goroutine, in a slot of its own, or, when lent, in the slot of a query of
// parent. An own slot is kept only while g holds the best ready query, and
// handed on otherwise; a lent slot runs g's queries regardless, since they
// are the parent's work.
func (p *Pool) runOwn(g *group, i int, parent *group, lent bool) {
	counted := !lent
	giveBack := func() {
		if lent {
			parent.lent--
		} else {
			p.release()
		}
	}
	done := false
	defer func() {
		if !done { // the query called runtime.Goexit; the caller's goroutine is ending
			p.mu.Lock()
			p.finish(g, i, errGoexit, counted)
			p.drop(g)
			giveBack()
			p.mu.Unlock()
		}
	}()
	for {
		err := g.call(i)
		p.mu.Lock()
		p.finish(g, i, err, counted)
		if i = p.nextOwn(g, counted); i < 0 {
			giveBack()
			done = true
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// nextOwn starts g's next query for its caller, or returns -1 when the
// caller should stop: nothing of g is queued, g's context is done, or (in an
// own slot) another request's query comes first. Callers hold pool.mu.
func (p *Pool) nextOwn(g *group, counted bool) int {
	if g.started == len(g.queries) {
		return -1
	}
	if g.Err() != nil {
		p.drop(g)
		return -1
	}
	if counted && (p.ready.Len() == 0 || p.ready[0] != g.h || g.h.head != g) {
		return -1
	}
	return p.start(g, counted)
}

// wait blocks until none of g's queries is pending and returns the outcome.
// When g's context ends first, the queued queries are dropped at once: the
// handle's AfterFunc does so for the request's end, this does so for a
// Fanout context of its own (a timeout, say) and for a sibling's failure.
func (p *Pool) wait(ctx context.Context, g *group) error {
	p.mu.Lock()
	if g.pending > 0 {
		done := make(chan struct{})
		g.done = done
		p.mu.Unlock()
		select {
		case <-done:
		case <-g.Done():
			p.mu.Lock()
			p.drop(g)
			p.mu.Unlock()
			<-done
		}
		p.mu.Lock()
	}
	err, dropped := g.err, g.dropped
	p.mu.Unlock()
	if err == nil && dropped {
		// Dropped because ctx ended: its cause says why (ErrClosed from a
		// Shutdown out of time, or plain ctx.Err()).
		if err = context.Cause(ctx); err == nil {
			err = ErrClosed
		}
	}
	return err
}
