package reqpool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// WriteError answers an HTTP request whose Fanout failed with err, with the
// status ErrorStatus chooses, and never with the error's text:
//
//   - ErrQueueFull, ErrClosed or ErrDBUnavailable (a database refusing
//     connections, or one that went away under a query: a server shutting
//     down or restarting, a connection broken mid-statement; see
//     QueryError.Is), or a request cancelled by a Shutdown that ran out of
//     time: 503 Service Unavailable with a Retry-After header of
//     Config.RetryAfter, rounded up to whole seconds;
//   - a deadline of a context the handler derived itself (a Fanout
//     timeout): 504 Gateway Timeout;
//   - anything else: 500 Internal Server Error with a generic body. Log err
//     yourself if you want it (ErrorStatus tells the status first): SQL text
//     and driver messages are for logs, not for clients.
//
// It writes nothing when nobody should: for a nil err, for a client that
// has gone away, and for a deadline of the request's own context, which the
// middleware that set it answers (chi's middleware.Timeout with 504,
// http.TimeoutHandler with 503); a second answer would be a superfluous
// WriteHeader. A timeout middleware of your own must answer its deadline
// likewise. When a query panicked with http.ErrAbortHandler, WriteError
// panics with it, so that net/http aborts the response as it does for a
// handler that panics with it.
//
// With Config.ProblemDetails of the pool of r's handle, the body is problem
// details (RFC 9457) as application/problem+json, with the status alone
// (without a handle, as for ErrNoHandle, text/plain):
// {"type":"about:blank","title":"Service Unavailable","status":503}.
//
// It must be called before anything else is written to w.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, http.ErrAbortHandler) {
		panic(http.ErrAbortHandler)
	}
	code := ErrorStatus(r, err)
	if code == 0 {
		return
	}
	cfg := Config{RetryAfter: DefaultRetryAfter}
	if h, ok := FromContext(r.Context()); ok {
		cfg = h.pool.cfg
	}
	if code == http.StatusServiceUnavailable {
		secs := int64((cfg.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	if cfg.ProblemDetails {
		writeProblem(w, code)
		return
	}
	http.Error(w, http.StatusText(code), code)
}

// writeProblem answers code as problem details (RFC 9457), with nothing
// of the error but its status: {"type":"about:blank","title":"Service
// Unavailable","status":503}.
func writeProblem(w http.ResponseWriter, code int) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"type":"about:blank","title":%q,"status":%d}`+"\n", http.StatusText(code), code)
}

// ErrorStatus returns the HTTP status that WriteError answers err with for
// the request r: 503, 504 or 500, or 0 when WriteError writes nothing (see
// WriteError). A handler can log err with it before writing.
func ErrorStatus(r *http.Request, err error) int {
	cause := context.Cause(r.Context())
	switch {
	case err == nil, errors.Is(err, http.ErrAbortHandler):
		return 0
	case errors.Is(err, ErrQueueFull), errors.Is(err, ErrClosed), errors.Is(err, ErrDBUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(cause, context.DeadlineExceeded):
		// The request's own deadline: whoever set it answers it.
		return 0
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case cause != nil:
		// The client disconnected (or the server is tearing the request
		// down): there is no one to answer.
		return 0
	default:
		return http.StatusInternalServerError
	}
}
