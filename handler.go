package reqpool

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// WriteError answers an HTTP request whose Fanout failed with err, as a
// handler would want, and never with the error's text:
//
//   - ErrQueueFull, ErrClosed or ErrDBUnavailable, or a request cancelled by
//     a Shutdown that ran out of time: 503 Service Unavailable with a
//     Retry-After header of Config.RetryAfter, rounded up to whole seconds;
//   - a deadline, of the Fanout's context or of the request's
//     (context.DeadlineExceeded): 504 Gateway Timeout;
//   - a client that has gone away (the request's context cancelled): nothing
//     is written, since nobody reads it;
//   - anything else: 500 Internal Server Error with a generic body. Log err
//     yourself if you want it: SQL text and driver messages are for logs, not
//     for clients.
//
// It must be called before anything else is written to w. A nil err writes
// nothing.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	cause := context.Cause(r.Context())
	switch {
	case err == nil:
	case errors.Is(err, ErrQueueFull), errors.Is(err, ErrClosed), errors.Is(err, ErrDBUnavailable), errors.Is(cause, ErrClosed):
		retry := DefaultRetryAfter
		if h, ok := FromContext(r.Context()); ok {
			retry = h.pool.cfg.RetryAfter
		}
		secs := int64((retry + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		writeStatus(w, http.StatusServiceUnavailable)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(cause, context.DeadlineExceeded):
		writeStatus(w, http.StatusGatewayTimeout)
	case cause != nil:
		// The client disconnected (or the server is tearing the request
		// down): there is no one to answer.
	default:
		writeStatus(w, http.StatusInternalServerError)
	}
}

// writeStatus writes code with its status text as a plain-text body.
func writeStatus(w http.ResponseWriter, code int) {
	http.Error(w, http.StatusText(code), code)
}
