package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reqpool/reqpool"
)

// server is a real net/http server on 127.0.0.1 that serves one contender,
// with a real client. Its one endpoint, GET /fanout?req=ID&n=N&d=DURATION
// (served at every path), runs N simulated queries of DURATION each through the contender's Fanout
// and answers 200, or whatever reqpool.WriteError makes of the error (503
// for a full queue, nothing for a client that is gone).
//
// The server wraps the contender's handler in one of its own, outermost, so
// that it sees what the contender's middleware does too: when the request's
// context ended (the hang-up, as the server saw it) and when the handler
// returned, which is when nothing of the request is left to run.
type server struct {
	c      Contender
	db     Database
	rec    *recorder
	srv    *httptest.Server
	client *http.Client
	active atomic.Int64 // handlers running

	mu   sync.Mutex
	reqs map[int]serverRequest // by request id, once the handler returned
}

// serverRequest is the server's view of one request, as offsets from the
// recorder's origin.
type serverRequest struct {
	Start  time.Duration // the outermost handler was called
	HangUp time.Duration // the request context ended while the handler ran; -1 if it did not
	Done   time.Duration // the outermost handler returned
}

// clientResult is the client's view of one request.
type clientResult struct {
	Req    int
	N      int           // tasks in the request
	Sent   time.Duration // offset from the recorder's origin
	Done   time.Duration // the response was read in full, or the request failed
	Status int           // 0 if there was no response
	Err    error
}

// Latency is the time from sending the request to having the response.
func (r clientResult) Latency() time.Duration { return r.Done - r.Sent }

// newServer starts a server for c with a simulated database of conns
// connections.
func newServer(c Contender, conns int) *server {
	return newServerDB(c, newSimDB(conns))
}

// newServerDB starts a server for c whose tasks are db's queries; the
// server closes db.
func newServerDB(c Contender, db Database) *server {
	s := &server{c: c, db: db, rec: newRecorder(), reqs: make(map[int]serverRequest)}
	s.srv = httptest.NewServer(s.outer(c.Wrap(http.HandlerFunc(s.fanout))))
	s.client = &http.Client{
		Transport: &http.Transport{
			// Open-loop load keeps hundreds of requests in flight against
			// an unbounded queue: keep their connections for reuse.
			MaxIdleConns:        2048,
			MaxIdleConnsPerHost: 2048,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
		Timeout: 2 * time.Minute, // a bound, never reached in a sane run
	}
	return s
}

// Close stops the client, the server (waiting for its handlers), the
// contender and the database.
func (s *server) Close() {
	s.client.CloseIdleConnections()
	s.srv.Close()
	s.c.Close()
	_ = s.db.Close()
}

// outer records the server's view of each request around next.
func (s *server) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.active.Add(1)
		defer s.active.Add(-1)
		id, _ := strconv.Atoi(r.URL.Query().Get("req"))
		sr := serverRequest{Start: s.rec.since(), HangUp: -1}
		var hangUp atomic.Int64
		hangUp.Store(-1)
		fired := make(chan struct{})
		stop := context.AfterFunc(r.Context(), func() {
			hangUp.Store(int64(s.rec.since()))
			close(fired)
		})
		next.ServeHTTP(w, r)
		sr.Done = s.rec.since()
		if !stop() {
			<-fired // the context ended while the handler ran
		}
		sr.HangUp = time.Duration(hangUp.Load())
		s.mu.Lock()
		s.reqs[id] = sr
		s.mu.Unlock()
	})
}

// fanout is the handler: n simulated queries of d each, in parallel.
func (s *server) fanout(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req, err1 := strconv.Atoi(q.Get("req"))
	n, err2 := strconv.Atoi(q.Get("n"))
	d, err3 := time.ParseDuration(q.Get("d"))
	if err1 != nil || err2 != nil || err3 != nil || n < 1 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	tasks := make([]Task, n)
	for i := range tasks {
		tasks[i] = s.db.Task(s.rec, req, d)
	}
	if err := s.c.Fanout(r.Context(), tasks); err != nil {
		reqpool.WriteError(w, r, err)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// get sends request req of n tasks of d each and waits for the answer, or
// for ctx to end (a client hanging up).
func (s *server) get(ctx context.Context, req, n int, d time.Duration) clientResult {
	return s.getAt(ctx, "/fanout", nil, req, n, d)
}

// getAt is get at another path, with header added to the request. The
// handler is the same at every path; the path and the header are for
// what the contender's middleware reads (reqpool's Config.Classify).
func (s *server) getAt(ctx context.Context, path string, header http.Header, req, n int, d time.Duration) clientResult {
	res := clientResult{Req: req, N: n}
	u := fmt.Sprintf("%s%s?req=%d&n=%d&d=%s", s.srv.URL, path, req, n, url.QueryEscape(d.String()))
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		res.Err = err
		return res
	}
	for k, v := range header {
		hr.Header[k] = v
	}
	res.Sent = s.rec.since()
	resp, err := s.client.Do(hr)
	if err == nil {
		res.Status = resp.StatusCode
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	res.Done = s.rec.since()
	res.Err = err
	return res
}

// waitIdle waits until no handler is running, or until timeout; it reports
// whether the server became idle.
func (s *server) waitIdle(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for s.active.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
	return true
}

// request returns the server's record of request req, once its handler has
// returned.
func (s *server) request(req int) (serverRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sr, ok := s.reqs[req]
	return sr, ok
}

// getJSON decodes the 200 answer to GET url into v.
func getJSON(ctx context.Context, client *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); resp.StatusCode != http.StatusOK || err != nil {
		return fmt.Errorf("GET %s: status %d, decode: %v", url, resp.StatusCode, err)
	}
	return nil
}
