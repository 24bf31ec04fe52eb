package reqpool

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/reqpool/reqpool/internal/sched"

	"github.com/reqpool/reqpool/internal/testhook"
)

func init() {
	testhook.Refusing = func(pool any, parent context.Context, err error) context.Context {
		ctx, h := pool.(*Pool).newHandle(parent, newRequestID())
		h.err = err // as for an unknown class: every Fanout returns it, running nothing
		return ctx
	}
}

// Handle is one request's share of a Pool: the queries that its Fanout calls
// admitted, scheduled together and abandoned together. Middleware creates one
// per HTTP request and NewContext one per job; FromContext finds it.
//
// A handle costs its request nothing shared until its first Fanout: only
// then does it register with the pool's scheduler, and only a registered
// handle counts in Stats.Requests.
type Handle struct {
	pool   *Pool
	member sched.Member  // the request in the pool's scheduler: its id, context (the request's), class and flow
	hdr    [1]string     // the X-Request-ID header's value, set without an allocation of its own
	timing *serverTiming // sums for the Server-Timing header; nil unless Config.ServerTiming
	err    error         // set before the first Fanout when Classify named an unknown class: every Fanout returns it
}

// ID returns the request id: Config.RequestID's answer, or the X-Request-ID
// header's value when it was a sane token, or a new UUIDv7; for NewContext,
// a new UUIDv7; for Detach, the request's.
func (h *Handle) ID() string { return h.member.ID }

// RequestID returns the request id of the handle in ctx (see Handle.ID), or
// "" when ctx carries none.
func RequestID(ctx context.Context) string {
	if h, ok := FromContext(ctx); ok {
		return h.member.ID
	}
	return ""
}

// handleKey is the context key for *Handle. Its type is unexported, so no
// other package can collide with it.
type handleKey struct{}

// handleContext is the context that carries a handle: one allocation for both.
type handleContext struct {
	context.Context
	h Handle
}

// Value implements context.Context.
func (c *handleContext) Value(key any) any {
	if _, ok := key.(handleKey); ok {
		return &c.h
	}
	return c.Context.Value(key)
}

// FromContext returns the handle stored in ctx by Middleware or NewContext.
func FromContext(ctx context.Context) (*Handle, bool) {
	h, ok := ctx.Value(handleKey{}).(*Handle)
	return h, ok
}

// newHandle returns a context derived from parent that carries a fresh
// handle onto p with the given id.
func (p *Pool) newHandle(parent context.Context, id string) (context.Context, *Handle) {
	c := &handleContext{Context: parent, h: Handle{pool: p, hdr: [1]string{id},
		member: sched.Member{ID: id, Parent: parent, Class: p.sched.Class("")}}}
	return c, &c.h
}

// NewContext returns a context carrying a fresh handle onto p, for callers
// outside HTTP (a job, a gRPC method). Fanout calls made with the context (or
// a context derived from it) share the handle: they are scheduled as one
// request and cancelled together.
//
// When parent ends, the handle's queued queries are dropped at once, and
// executing ones see their context done. The returned release ends the
// handle: it cancels the context, drops whatever is still queued, and waits
// until none of the handle's queries is executing. Unlike a
// context.CancelFunc, then, it blocks. Call it when the work is done,
// typically with defer, and never from inside one of the handle's own
// queries, which it would wait for; later calls do nothing more.
func (p *Pool) NewContext(parent context.Context) (ctx context.Context, release func()) {
	return p.newContext(parent, newRequestID())
}

// Detach returns a context for work that outlives the request of ctx's
// handle, such as a goroutine that the handler starts to finish something
// after the response: its Fanouts run on a handle of their own onto the
// same pool, with the request's id (so their statements carry the same tag
// and their logs match the request's), class and flow. The context keeps
// ctx's values but not its end: the request's end does not end it, nor,
// when ctx is a query's, that query's end: its Fanouts take slots of their
// own. Shutdown ends it (with a cause matching ErrClosed), once the pool is
// idle or Shutdown's own ctx has ended, as it ends requests; so does release, which ends the handle as NewContext's does: call it when
// the work is done, never from inside one of its queries.
//
// Without Detach, such work fails with ErrHandleReleased once the handler
// has returned. If ctx carries no handle, Detach returns
// context.WithoutCancel(ctx), on which Fanout fails with ErrNoHandle, and a
// release that does nothing.
func Detach(ctx context.Context) (detached context.Context, release func()) {
	base := sched.Detached(context.WithoutCancel(ctx))
	h, ok := FromContext(ctx)
	if !ok {
		return base, func() {}
	}
	p := h.pool
	cctx, cancel := context.WithCancelCause(base)
	stop := context.AfterFunc(p.closing, func() { cancel(errShutdown) })
	dctx, d := p.newHandle(cctx, h.member.ID)
	d.member.Class, d.member.Flow, d.err = h.member.Class, h.member.Flow, h.err
	return dctx, func() {
		stop()
		cancel(context.Canceled)
		d.release()
	}
}

// newContext is NewContext with the request id given.
func (p *Pool) newContext(parent context.Context, id string) (context.Context, func()) {
	cctx, cancel := context.WithCancel(parent)
	ctx, h := p.newHandle(cctx, id)
	return ctx, func() { cancel(); h.release() }
}

// newRequestID returns a new UUIDv7 (RFC 9562): the Unix time in
// milliseconds, then 74 random bits. They sort by creation time in logs. The
// random bits come from math/rand/v2's per-thread generator rather than
// uuid.NewV7's, which takes a process-wide lock and reads crypto/rand: a
// request id is unique, not secret, and making one must not make requests
// wait for each other.
func newRequestID() string {
	var u uuid.UUID
	ms := uint64(time.Now().UnixMilli())
	a, b := rand.Uint64(), rand.Uint64()
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	for i := range 8 {
		u[8+i] = byte(b >> (56 - 8*i))
	}
	u[6] = 0x70 | byte(a>>8)&0x0f // version 7
	u[7] = byte(a)
	u[8] = 0x80 | u[8]&0x3f // variant 10
	return u.String()
}

// release ends h's request: later Fanouts fail with ErrHandleReleased, its
// queued queries are dropped, its executing ones see their context
// cancelled, and release returns once none of them executes in a slot of its
// own (see sched.Sched.Release).
func (h *Handle) release() { h.pool.sched.Release(&h.member) }
