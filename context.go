package reqpool

import (
	"context"

	"github.com/google/uuid"
)

// Handle is one request's share of a Pool: the queries that its Fanout calls
// admitted, scheduled together and abandoned together. Middleware creates one
// per HTTP request and NewContext one per job; FromContext finds it.
type Handle struct {
	pool   *Pool
	id     string
	seq    uint64                  // creation order, the scheduler's tie-break
	cancel context.CancelCauseFunc // cancels the handle's context
	stop   func() bool             // unregisters the context.AfterFunc that abandons queued work

	// Scheduling state, guarded by pool.mu.
	head, tail *group        // groups with queued queries, oldest first
	queued     int           // queries admitted and not started
	running    int           // queries executing in slots of their own
	key        uint64        // head.arrival + (queued+running)×Workers; see Pool
	index      int           // position in pool.ready, or -1
	released   bool          // the context's CancelFunc was called
	drained    chan struct{} // closed when running drops to 0 after release; nil unless someone waits
}

// ID returns the request id: the X-Request-ID header's value when it was a
// sane token, or a new UUIDv7; for NewContext, a new UUIDv7.
func (h *Handle) ID() string { return h.id }

// handleKey is the context key for *Handle. Its type is unexported, so no
// other package can collide with it.
type handleKey struct{}

// FromContext returns the handle stored in ctx by Middleware or NewContext.
func FromContext(ctx context.Context) (*Handle, bool) {
	h, ok := ctx.Value(handleKey{}).(*Handle)
	return h, ok
}

// NewContext returns a context carrying a fresh handle onto p, for callers
// outside HTTP (a job, a gRPC method). Fanout calls made with the context (or
// a context derived from it) share the handle: they are scheduled as one
// request and cancelled together.
//
// When parent ends, the handle's queued queries are dropped at once, and
// executing ones see their context done. The returned cancel releases the
// handle: it cancels the context, drops whatever is still queued, and waits
// until none of the handle's queries is executing. Call it when the work is
// done, typically with defer, and never from inside one of the handle's own
// queries, which it would wait for.
func (p *Pool) NewContext(parent context.Context) (context.Context, context.CancelFunc) {
	return p.newContext(parent, newRequestID())
}

// newRequestID returns a new UUIDv7: unique, and sorted by creation time in
// logs. crypto/rand, behind uuid, does not fail since Go 1.24.
func newRequestID() string { return uuid.Must(uuid.NewV7()).String() }

func (p *Pool) newContext(parent context.Context, id string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	h := &Handle{pool: p, id: id, cancel: cancel, index: -1}
	ctx = context.WithValue(ctx, handleKey{}, h)
	// Dropping queued work is the one reaction to cancellation that must not
	// wait for a Fanout caller to wake up (it may be busy running a query),
	// so it is registered here, once per handle, rather than per query.
	h.stop = context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.abandon(h)
		p.mu.Unlock()
	})
	p.mu.Lock()
	p.seq++
	h.seq = p.seq
	p.handles[h] = struct{}{}
	p.mu.Unlock()
	return ctx, h.release
}

// release is the CancelFunc returned by NewContext.
func (h *Handle) release() {
	h.stop() // the AfterFunc's work is done below, synchronously
	h.cancel(nil)
	p := h.pool
	p.mu.Lock()
	if h.released {
		p.mu.Unlock()
		return
	}
	h.released = true
	p.abandon(h)
	delete(p.handles, h)
	var drained chan struct{}
	if h.running > 0 {
		h.drained = make(chan struct{})
		drained = h.drained
	}
	p.mu.Unlock()
	if drained != nil {
		<-drained
	}
}
