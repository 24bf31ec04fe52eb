package compat

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"go.uber.org/goleak"

	"github.com/reqpool/reqpool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lockedBuffer is a bytes.Buffer safe for the server's error log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestChiTimeout: with chi's middleware.Timeout before reqpool.Middleware,
// a Fanout cut off by the deadline is answered exactly once, with chi's
// 504, and the server logs no superfluous WriteHeader; a Fanout that beats
// the deadline is answered by the handler.
func TestChiTimeout(t *testing.T) {
	p, err := reqpool.New(reqpool.Config{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Timeout(50*time.Millisecond), reqpool.Middleware(p))
	sleep := func(d time.Duration) reqpool.Query {
		return reqpool.Func(func(ctx context.Context) error {
			select {
			case <-time.After(d):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	r.Get("/slow", func(w http.ResponseWriter, r *http.Request) {
		reqpool.WriteError(w, r, reqpool.Fanout(r.Context(), sleep(time.Hour), sleep(time.Hour)))
	})
	r.Get("/fast", func(w http.ResponseWriter, r *http.Request) {
		if err := reqpool.Fanout(r.Context(), sleep(0), sleep(0)); err != nil {
			reqpool.WriteError(w, r, err)
			return
		}
		io.WriteString(w, "ok")
	})
	var logged lockedBuffer
	srv := httptest.NewUnstartedServer(r)
	srv.Config.ErrorLog = log.New(&logged, "", 0)
	srv.Start()
	defer srv.Close()

	for _, tc := range []struct {
		path   string
		status int
	}{{"/slow", http.StatusGatewayTimeout}, {"/fast", http.StatusOK}, {"/slow", http.StatusGatewayTimeout}} {
		resp, err := srv.Client().Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.status)
		}
	}
	srv.Close()
	if s := logged.String(); s != "" {
		t.Errorf("server logged: %s", s)
	}
	if s := p.Stats(); s.Running != 0 || s.Queued != 0 || s.Requests != 0 {
		t.Errorf("pool after the requests: %+v", s)
	}
}

// TestChiRequestID: behind chi's middleware.RequestID and Logger, with
// Config.RequestID reading chi's id, a request has one id: in the response's
// X-Request-ID, in chi's log line and in the statements' tag.
func TestChiRequestID(t *testing.T) {
	p, err := reqpool.New(reqpool.Config{RequestID: func(r *http.Request) string { return middleware.GetReqID(r.Context()) }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	var logged lockedBuffer
	r := chi.NewRouter()
	r.Use(middleware.RequestID,
		middleware.RequestLogger(&middleware.DefaultLogFormatter{Logger: log.New(&logged, "", 0), NoColor: true}),
		reqpool.Middleware(p))
	tags := make(chan string, 1)
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		err := reqpool.Fanout(r.Context(), reqpool.Func(func(ctx context.Context) error {
			tags <- reqpool.TagSQL(ctx, "SELECT 1")
			return nil
		}))
		if err != nil {
			reqpool.WriteError(w, r, err)
		}
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	srv.Close() // the log line is written once the request is done
	id := resp.Header.Get(reqpool.RequestIDHeader)
	tag := <-tags
	if id == "" || !strings.Contains(id, "/") { // chi's ids are host/random-000001
		t.Fatalf("X-Request-ID %q, want chi's id", id)
	}
	if !strings.Contains(logged.String(), "["+id+"]") {
		t.Errorf("chi's log %q does not name the request id %q", logged.String(), id)
	}
	if want := "request_id='" + strings.ReplaceAll(id, "/", "%2F") + "'"; !strings.Contains(tag, want) {
		t.Errorf("tag %q, want it to carry %q", tag, want)
	}
}
