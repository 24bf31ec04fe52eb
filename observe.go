package reqpool

import (
	"context"
	"log"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reqpool/reqpool/internal/sched"
)

// An Observer is told how every query of a Pool ended and why every refused
// Fanout was refused; attach one with Pool.Observe. reqprom (Prometheus),
// reqotel (OpenTelemetry) and Pool.DebugHandler are Observers.
//
// Its methods are called on the goroutine that ran the query, or made the
// Fanout (for its refusal, and for its dropped queries, once it has its
// outcome), outside the pool's lock, concurrently with each other:
// they must be safe for concurrent use and return quickly. A panic in one
// is contained (see Pool.Observe). A pool with no
// Observer attached reads no clock for them.
type Observer interface {
	// QueryDone reports a query that returned, or that was dropped without
	// starting. ctx is the context the query ran with (or would have): it
	// carries the request's values, such as a tracing span.
	QueryDone(ctx context.Context, rec QueryRecord)

	// Refused reports a Fanout that was refused as a whole.
	Refused(ctx context.Context, ref Refusal)
}

// QueryRecord is what an Observer learns of one query.
type QueryRecord struct {
	RequestID string    // the request id of its handle
	Class     string    // its request's class (Class.Name; "" without Config.Classes)
	Flow      string    // its request's flow, as Config.Classify or Pool.NewClassContext named it: "" for none
	Index     int       // its position in its Fanout call
	Admitted  time.Time // when its Fanout was admitted
	Started   time.Time // when it started; zero if it was dropped
	Finished  time.Time // when it returned, or was dropped
	Outcome   Outcome
	Err       error // what it returned, for OutcomeError, OutcomePanic and OutcomeCancelled
}

// Wait is how long the query waited in the queue: from its Fanout's
// admission to its start, or to its drop.
func (r QueryRecord) Wait() time.Duration {
	if r.Started.IsZero() {
		return r.Finished.Sub(r.Admitted)
	}
	return r.Started.Sub(r.Admitted)
}

// Run is how long the query ran: zero if it was dropped.
func (r QueryRecord) Run() time.Duration {
	if r.Started.IsZero() {
		return 0
	}
	return r.Finished.Sub(r.Started)
}

// Outcome says how a query ended.
type Outcome uint8

const (
	OutcomeOK      Outcome = iota // returned nil
	OutcomeError                  // returned an error while its Fanout's context was live: a failure
	OutcomePanic                  // panicked (or called runtime.Goexit)
	OutcomeDropped                // never started: its context ended, a sibling failed, or Shutdown ran out of time
	// OutcomeCancelled: returned an error once its Fanout's context had
	// ended (the client hung up, a deadline passed, a sibling failed,
	// Shutdown ran out of time): cancelled, not failed, as Stats.Cancelled
	// counts it.
	OutcomeCancelled
)

// String returns "ok", "error", "panic", "dropped" or "cancelled", the
// label values that reqprom exports.
func (o Outcome) String() string {
	switch o {
	case OutcomeOK:
		return "ok"
	case OutcomeError:
		return "error"
	case OutcomePanic:
		return "panic"
	case OutcomeDropped:
		return "dropped"
	case OutcomeCancelled:
		return "cancelled"
	}
	return "unknown"
}

// Refusal is what an Observer learns of a refused Fanout.
type Refusal struct {
	RequestID string
	Class     string // the request's class, as in QueryRecord
	Flow      string // the request's flow, as in QueryRecord
	Queries   int    // how many queries the Fanout had
	Reason    RefusalReason
}

// RefusalReason says why a Fanout was refused.
type RefusalReason uint8

const (
	RefusedQueueFull RefusalReason = iota // ErrQueueFull
	RefusedTooMany                        // ErrTooManyQueries
	RefusedClosed                         // ErrClosed
)

// String returns "queue_full", "too_many" or "closed", the label values
// that reqprom exports.
func (r RefusalReason) String() string {
	switch r {
	case RefusedQueueFull:
		return "queue_full"
	case RefusedTooMany:
		return "too_many"
	case RefusedClosed:
		return "closed"
	}
	return "unknown"
}

// Observe attaches o to p: from now on o is told of every query that ends
// and every Fanout refused. It returns a function that detaches o again.
// Observe(nil) attaches nothing, and its detach does nothing.
//
// An Observer that panics is contained, as a query that panics is: the
// call is abandoned, the queries' results and the Fanout's are untouched,
// and the first panic of each attachment is written to the standard
// logger (log.Printf) with its stack; o stays attached and is called again.
//
// Observers cost each query one clock read, and each Fanout one more, plus
// their own calls (see BenchmarkObserve); with none attached, a Fanout pays
// one atomic load.
func (p *Pool) Observe(o Observer) (detach func()) {
	if o == nil {
		return func() {}
	}
	e := &observerEntry{Observer: o}
	p.editObservers(func(os []Observer) []Observer { return append(os, e) })
	var once sync.Once
	return func() {
		once.Do(func() {
			p.editObservers(func(os []Observer) []Observer {
				return slices.DeleteFunc(os, func(x Observer) bool { return x == Observer(e) })
			})
		})
	}
}

// observerEntry is one attachment of an Observer: a pointer, so that
// detaching removes this attachment alone, compares whatever the Observer's
// type, and the same Observer may be attached twice.
type observerEntry struct {
	Observer
	panicked atomic.Bool // a call of this attachment's panicked: reported already
}

// contain recovers a panic of a call to observer o and reports it, once per
// attachment. It must be deferred directly.
func contain(o Observer) {
	v := recover()
	if v == nil {
		return
	}
	if e, ok := o.(*observerEntry); ok && !e.panicked.CompareAndSwap(false, true) {
		return
	}
	log.Printf("reqpool: Observer %T panicked, and was contained (reported once per Observe): %v\n%s", unwrapObserver(o), v, debug.Stack())
}

func unwrapObserver(o Observer) Observer {
	if e, ok := o.(*observerEntry); ok {
		return e.Observer
	}
	return o
}

// queryDone calls o.QueryDone, containing a panic.
func queryDone(ctx context.Context, o Observer, rec QueryRecord) {
	defer contain(o)
	o.QueryDone(ctx, rec)
}

// refused calls o.Refused, containing a panic.
func refused(ctx context.Context, o Observer, ref Refusal) {
	defer contain(o)
	o.Refused(ctx, ref)
}

// editObservers replaces p's observers with edit's result on a copy, so
// that a Fanout reads them with one atomic load and no lock.
func (p *Pool) editObservers(edit func([]Observer) []Observer) {
	for {
		old := p.observers.Load()
		var cur []Observer
		if old != nil {
			cur = slices.Clone(*old)
		}
		next := edit(cur)
		var ptr *[]Observer
		if len(next) > 0 {
			ptr = &next
		}
		if p.observers.CompareAndSwap(old, ptr) {
			return
		}
	}
}

// Ended implements sched.Work: it tells the Fanout's observers how its
// query i ended. It is the one place that builds a QueryRecord, and it
// runs outside the scheduler's lock.
func (c *fanoutCall) Ended(i int, e sched.Event) {
	h := c.h
	rec := QueryRecord{RequestID: h.member.ID, Class: h.member.Class.Name(), Flow: h.member.Flow, Index: i,
		Admitted: e.Admitted, Started: e.Started, Finished: e.Finished, Outcome: Outcome(e.Outcome), Err: e.Err}
	for _, o := range c.obs {
		queryDone(&c.Group, o, rec)
	}
}

// refusal returns the Refusal of a Fanout of n queries on h.
func (h *Handle) refusal(n int, reason RefusalReason) Refusal {
	return Refusal{RequestID: h.member.ID, Class: h.member.Class.Name(), Flow: h.member.Flow, Queries: n, Reason: reason}
}

// recordRefusal tells obs of a refused Fanout.
func recordRefusal(ctx context.Context, obs []Observer, ref Refusal) {
	for _, o := range obs {
		refused(ctx, o, ref)
	}
}
