package reqpool

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/reqpool/reqpool/internal/sched"
)

// Sentinel errors. Fanout and New wrap them with detail; test with errors.Is.
var (
	// ErrQueueFull is returned by Fanout when its queries do not all fit into
	// the free workers plus the free queue space. The Fanout is rejected as a
	// whole: none of its queries runs. It is an overload answer: retry later.
	ErrQueueFull = errors.New("reqpool: queue full")

	// ErrTooManyQueries is returned by Fanout when it is given more queries
	// than Config.MaxFanout. None of them runs. It is a programming error,
	// not load.
	ErrTooManyQueries = errors.New("reqpool: too many queries in one Fanout")

	// ErrTooManyTasks is ErrTooManyQueries, under the name it had before
	// reqpool spoke of queries alone.
	//
	// Deprecated: use ErrTooManyQueries; this alias goes in the next release.
	ErrTooManyTasks = ErrTooManyQueries

	// ErrClosed is returned by Fanout once Shutdown has been called.
	ErrClosed = errors.New("reqpool: pool closed")

	// ErrHandleReleased is returned by Fanout on a handle that was
	// released: its handler returned (Middleware), or its release function
	// was called (NewContext, Detach). Work that outlives its request, in a
	// goroutine the handler started, needs a handle of its own: see Detach.
	// The error also matches context.Canceled, which it was before.
	ErrHandleReleased = errors.New("reqpool: the request's handle was released (its handler returned); use Detach for work that outlives the request")

	// ErrNoHandle is returned by Fanout when its context carries no handle:
	// the request did not pass through Middleware and the context did not come
	// from Pool.NewContext. There is no process-wide default pool, on purpose:
	// a hidden pool would be a second, unconfigured bound.
	ErrNoHandle = errors.New("reqpool: context has no handle (use Middleware or Pool.NewContext)")

	// ErrSharedConn is wrapped in the *QueryError Fanout returns, running
	// nothing, when two of its queries use the same *sql.Tx, *sqlx.Tx,
	// *sql.Conn or *sqlx.Conn. One connection runs one statement at a time,
	// and lib/pq cannot interleave two: run such queries one after another,
	// or on the *sqlx.DB. Fanout cannot see a transaction behind a wrapper
	// type of your own, nor the same one used by two concurrent Fanouts.
	ErrSharedConn = errors.New("reqpool: two queries of one Fanout share a transaction or connection")

	// ErrInvalidConfig is returned by New for a Config it cannot honour.
	ErrInvalidConfig = errors.New("reqpool: invalid config")

	// ErrInvalidQuery is wrapped in the *QueryError Fanout returns, running
	// nothing, for a Query it cannot run: the zero Query, Func(nil), or
	// Select, Get, Exec or ExecResult on a nil database handle (a nil
	// interface or a nil pointer). It is a programming error, not load.
	ErrInvalidQuery = errors.New("reqpool: invalid query")

	// ErrUnknownClass is returned by Pool.NewClassContext, and by every
	// Fanout of a request that Config.Classify put in a class the pool does
	// not have, running nothing. It is a programming error, not load, and is
	// not counted in Stats.
	ErrUnknownClass = errors.New("reqpool: unknown class")
)

// QueryError is the error Fanout returns when one of its queries fails: the
// first failure, which also cancelled the others. Index is the query's
// position in the Fanout call. Err is what the query returned, unchanged, so
// errors.Is and errors.As reach it (a *pq.Error, sql.ErrNoRows, a *PanicError).
//
// When the query failed because the Fanout's context had ended, errors.Is
// also matches the context's cause (context.DeadlineExceeded,
// context.Canceled, ErrClosed after a Shutdown that ran out of time): drivers
// report a cancelled statement in their own terms (lib/pq as SQLSTATE 57014)
// and would otherwise hide why it was cancelled.
type QueryError struct {
	Index int
	Err   error

	ctx error // the context's cause, if it had ended when the query failed
}

func (e *QueryError) Error() string {
	if e.ctx != nil {
		return fmt.Sprintf("reqpool: query %d: %v (%v)", e.Index, e.Err, e.ctx)
	}
	return fmt.Sprintf("reqpool: query %d: %v", e.Index, e.Err)
}

// Unwrap returns the query's own error and, if the context had ended, its
// cause.
func (e *QueryError) Unwrap() []error {
	if e.ctx != nil {
		return []error{e.Err, e.ctx}
	}
	return []error{e.Err}
}

// Is reports whether target is ErrDBUnavailable and the query failed, its
// context still live, because the database went away under it for a
// moment (see transient): errors.Is(err, ErrDBUnavailable) then holds, and
// WriteError answers 503 with Retry-After, while errors.As still reaches
// the driver's error.
func (e *QueryError) Is(target error) bool {
	return target == ErrDBUnavailable && e.ctx == nil && transient(e.Err)
}

// transient reports whether err, what a query returned, says that its
// server is shutting down or restarting, or its connection broke
// mid-statement: conditions that a retry a moment later may not meet.
// SQLSTATE 57P01 admin_shutdown, 57P02 crash_shutdown and 57P03
// cannot_connect_now, as lib/pq's *pq.Error and pgx's *pgconn.PgError
// report them (SQLState); a connection reset by the server, a closed pipe,
// an unexpected EOF, and database/sql's driver.ErrBadConn.
func transient(err error) bool {
	var s interface{ SQLState() string }
	if errors.As(err, &s) {
		switch s.SQLState() {
		case "57P01", "57P02", "57P03":
			return true
		}
		return false
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, driver.ErrBadConn)
}

// PanicError is what a query that panicked returns instead: the process keeps
// running and Fanout reports it like any other failure, wrapped in a
// *QueryError. Its Error is one line, for a log line: the panic's value and
// the function that panicked, as "panic: kaboom (in main.load, at
// /src/app/load.go:42)"; the whole stack is in Stack.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the panicking goroutine's stack, from runtime/debug.Stack

	at string // the panicking frame, "function, at file:line"; "" if not found
}

// newPanicError is called by the deferred recover of the query that
// panicked.
func newPanicError(v any) *PanicError {
	return &PanicError{Value: v, Stack: debug.Stack(), at: panickingFrame()}
}

// panickingFrame returns the frame that called panic (or faulted), for a
// caller that runs in a deferred function during the panic: the first frame
// outside the runtime after runtime.gopanic.
func panickingFrame() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	panicking := false
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			panicking = true
		case panicking && !strings.HasPrefix(f.Function, "runtime."):
			return fmt.Sprintf("%s, at %s:%d", f.Function, f.File, f.Line)
		}
		if !more {
			return ""
		}
	}
}

func (e *PanicError) Error() string {
	v := strings.ReplaceAll(fmt.Sprint(e.Value), "\n", " ")
	if e.at == "" {
		return "panic: " + v
	}
	return fmt.Sprintf("panic: %s (in %s)", v, e.at)
}

// Unwrap returns the panic value when it is an error, so that
// errors.Is(err, http.ErrAbortHandler) and the like keep working.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// errReleased is what Fanout returns on a released handle.
var errReleased = fmt.Errorf("%w: %w", ErrHandleReleased, context.Canceled)

// errShutdown is the cause with which Shutdown cancels the Fanouts still
// live when its context ends. It matches both ErrClosed and context.Canceled.
var errShutdown = fmt.Errorf("%w: %w", ErrClosed, context.Canceled)

// queueFullError is the ErrQueueFull of one refused Fanout, with what the
// scheduler saw (its Refusal). It is made outside the scheduler's lock, and
// Error formats it only when the caller asks.
type queueFullError struct{ sched.Refusal }

func (e *queueFullError) Error() string {
	in := ""
	if e.Class != "" {
		in = fmt.Sprintf(" in class %q", e.Class)
	}
	return fmt.Sprintf("%v: %d queries do not fit%s (%d queued, QueueSize %d, %d free workers)",
		ErrQueueFull, e.Queries, in, e.Queued, e.QueueSize, e.Free)
}

func (e *queueFullError) Unwrap() error { return ErrQueueFull }

// tooManyError is the ErrTooManyQueries of a Fanout of n queries in class
// c, which can never be admitted.
func (p *Pool) tooManyError(c *sched.Class, n int) error {
	if c.MaxFanout() < p.cfg.MaxFanout {
		return fmt.Errorf("%w: %d queries, class %q fits %d (Workers %d + its QueueSize %d)", ErrTooManyQueries, n, c.Name(), c.MaxFanout(), p.cfg.Workers, c.QueueSize())
	}
	return fmt.Errorf("%w: %d queries, MaxFanout is %d", ErrTooManyQueries, n, p.cfg.MaxFanout)
}
