package reqpool

import "net/http"

// RequestIDHeader is the header Middleware reads the request id from and
// echoes it in.
const RequestIDHeader = "X-Request-ID"

// maxRequestIDLen is the longest X-Request-ID accepted as the request id.
const maxRequestIDLen = 64

// Middleware returns a middleware that gives each request a handle onto p,
// bound to the request's context, so that the handler can call Fanout with
// r.Context().
//
// The request id is Config.RequestID's answer when it gives one, else the
// X-Request-ID header when it is a sane token (1 to 64 of A-Z a-z 0-9 . _
// -); anything else is replaced by a new UUIDv7, so a hostile header never
// reaches logs or SQL comments. Config.RequestID's answer is the
// application's to vouch for (chi's RequestID, for one, keeps a client's
// X-Request-Id as it is): Middleware only checks that it is printable
// ASCII, and the SQL comment percent-encodes it. The id is set as the
// response's X-Request-ID header before the handler runs. With
// Config.ServerTiming, it also wraps the ResponseWriter to add a
// Server-Timing header (see there). Middleware writes nothing else. With
// Config.Classify, it puts the request in the class and flow Classify
// names.
//
// When the client goes away, the request context ends: the request's queued
// queries are dropped and its executing ones see their context done. When the
// handler returns, or panics, the handle is released: nothing of the request
// is left queued or executing once the middleware returns.
//
// Middleware panics if p is nil, like http.Handle does for a nil handler: it
// is a wiring mistake, found at start-up.
func Middleware(p *Pool) func(http.Handler) http.Handler {
	if p == nil {
		panic("reqpool: Middleware called with a nil *Pool")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, h := p.newHandle(r.Context(), p.requestID(r))
			defer h.release()
			if p.cfg.Classify != nil {
				h.route(p.cfg.Classify(r))
			}
			// The canonical key, and a slice that lives in the handle: the
			// same as Header().Set, without an allocation of its own.
			w.Header()[canonicalRequestIDHeader] = h.hdr[:]
			if p.cfg.ServerTiming {
				h.timing = new(serverTiming)
				tw := &timingWriter{ResponseWriter: w, t: h.timing}
				// A handler that writes nothing is answered by net/http
				// after it returns: stamp the header then.
				defer tw.stamp()
				w = tw
			}
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// canonicalRequestIDHeader is RequestIDHeader as http.Header keys it
// (http.CanonicalHeaderKey; TestMiddlewareRequestID checks).
const canonicalRequestIDHeader = "X-Request-Id"

// requestID returns the id of r: Config.RequestID's answer when it is a
// valid application id, else the X-Request-ID header when it is a valid
// request id, else a new UUIDv7.
func (p *Pool) requestID(r *http.Request) string {
	if p.cfg.RequestID != nil {
		if id := p.cfg.RequestID(r); validAppRequestID(id) {
			return id
		}
	}
	var header string // r.Header.Get, without canonicalising the key anew
	if v := r.Header[canonicalRequestIDHeader]; len(v) > 0 {
		header = v[0]
	}
	return requestID(header)
}

// maxAppRequestIDLen is the longest id that Config.RequestID may give.
const maxAppRequestIDLen = 128

// validAppRequestID reports whether s is 1 to 128 printable ASCII
// characters other than space: an id of the application's, which may hold
// '/' or ':' (chi's "host/abc-000001", "trace:abc/123"), but nothing that
// could split a log line or a header.
func validAppRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxAppRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// requestID returns header when it is a valid request id, else a new UUIDv7.
func requestID(header string) string {
	if validRequestID(header) {
		return header
	}
	return newRequestID()
}

// validRequestID reports whether s is 1 to 64 of [A-Za-z0-9._-].
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
