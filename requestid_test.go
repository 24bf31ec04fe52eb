package reqpool

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// appIDKey is where the request-id middleware in front of reqpool (chi's
// middleware.RequestID, say) keeps its id.
type appIDKey struct{}

// TestConfigRequestID: behind a request-id middleware of the application's,
// Config.RequestID makes its id the request's: one id in the response
// header, the application's context and the statements' tag. An answer
// that could split a header or a log line is not taken.
func TestConfigRequestID(t *testing.T) {
	p := newPool(t, Config{RequestID: func(r *http.Request) string {
		id, _ := r.Context().Value(appIDKey{}).(string)
		return id
	}})
	tagged := make(chan string, 4)
	inner := Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := Fanout(r.Context(), Func(func(ctx context.Context) error {
			tagged <- TagSQL(ctx, "SELECT 1")
			return nil
		}))
		if err != nil {
			WriteError(w, r, err)
		}
	}))
	var appID string
	srv, c := serveHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The application's middleware: chi's makes ids like this one.
		inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), appIDKey{}, appID)))
	}))
	for _, tc := range []struct {
		appID, header, want string // want "" for a new UUIDv7
	}{
		{"host-1/abcDEF-000001", "", "host-1/abcDEF-000001"},
		{"trace:abc/123", "client-id", "trace:abc/123"},
		{"", "client-id", "client-id"},                       // no answer: the header, as without RequestID
		{"bad\nid", "client-id", "client-id"},                // would split a log line
		{strings.Repeat("x", 129), "client-id", "client-id"}, // too long
		{"with space", "", ""},
	} {
		appID = tc.appID
		r := get(context.Background(), c, srv.URL, RequestIDHeader, tc.header)
		if r.err != nil || r.status != http.StatusOK {
			t.Fatalf("GET with app id %q: %+v", tc.appID, r)
		}
		tag := <-tagged
		switch {
		case tc.want == "" && (!validRequestID(r.id) || len(r.id) != 36):
			t.Errorf("app id %q, header %q: id %q, want a new UUIDv7", tc.appID, tc.header, r.id)
		case tc.want != "" && r.id != tc.want:
			t.Errorf("app id %q, header %q: id %q, want %q", tc.appID, tc.header, r.id, tc.want)
		}
		var enc strings.Builder
		percentEncode(&enc, r.id)
		if want := "SELECT 1 /*request_id='" + enc.String() + "'*/"; tag != want {
			t.Errorf("tag %q, want %q", tag, want)
		}
	}
}

// TestProblemDetails: with Config.ProblemDetails, WriteError answers a real
// client with problem details that hold the status and nothing of the
// error; without it, text/plain as before.
func TestProblemDetails(t *testing.T) {
	for _, problem := range []bool{false, true} {
		p := newPool(t, Config{ProblemDetails: problem})
		srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
			WriteError(w, r, fmt.Errorf("pq: secret table missing: %w", ErrQueueFull))
		}, nil)
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ct := resp.Header.Get("Content-Type")
		switch {
		case resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || strings.Contains(string(body), "secret"):
			t.Errorf("ProblemDetails %v: %d, Retry-After %q, body %q", problem, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		case problem && (ct != "application/problem+json" || string(body) != `{"type":"about:blank","title":"Service Unavailable","status":503}`+"\n"):
			t.Errorf("problem details: %s %q", ct, body)
		case !problem && !strings.HasPrefix(ct, "text/plain"):
			t.Errorf("without ProblemDetails: Content-Type %q", ct)
		}
	}
}
