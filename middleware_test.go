package reqpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// These tests go through a real net/http server on loopback and a real
// client, as users' handlers do.

// serve starts a server whose handler is h behind Middleware(p), and returns
// it with a client of its own. Both are closed when the test ends. after,
// when not nil, runs once the middleware has returned, panic or not.
func serve(t *testing.T, p *Pool, h http.HandlerFunc, after func()) (*httptest.Server, *http.Client) {
	t.Helper()
	inner := Middleware(p)(h)
	return serveHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if after != nil {
			defer after()
		}
		inner.ServeHTTP(w, r)
	}))
}

// serveHandler serves h as it is; see serve.
func serveHandler(t *testing.T, h http.Handler) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the panic test's panics are expected
	srv.Start()
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	return srv, &http.Client{Transport: tr}
}

// get sends a GET and returns the status, the X-Request-ID and Retry-After
// headers and the body. It is safe to call from any goroutine: it returns
// errors rather than failing the test.
type reply struct {
	status          int
	id, retry, body string
	latency         time.Duration // from sending the request to reading the whole body
	doneAt          time.Duration // for launch: completion, from the scenario's start
	err             error
}

func get(ctx context.Context, c *http.Client, url string, header ...string) reply {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return reply{err: err}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, id: resp.Header.Get(RequestIDHeader), retry: resp.Header.Get("Retry-After"),
		body: string(body), latency: time.Since(start), err: err}
}

// fanoutHandler answers /?n=N&d=D by running N queries of duration D, each
// announced on started (if not nil) as it starts.
func fanoutHandler(started chan<- string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		tag := r.URL.Query().Get("tag")
		q := sleep(d)
		if started != nil {
			q = Func(func(ctx context.Context) error {
				started <- tag
				return sleep(d).run(ctx)
			})
		}
		if err := Fanout(r.Context(), repeat(n, q)...); err != nil {
			WriteError(w, r, err)
			return
		}
		io.WriteString(w, "ok")
	}
}

func TestMiddlewareRequestID(t *testing.T) {
	p := newPool(t, Config{})
	seen := make(chan string, 1)
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		h, ok := FromContext(r.Context())
		if !ok {
			seen <- "no handle"
			return
		}
		seen <- h.ID()
	}, nil)

	r := get(context.Background(), c, srv.URL, RequestIDHeader, "abc-123.X_y")
	if r.err != nil || r.id != "abc-123.X_y" || <-seen != "abc-123.X_y" {
		t.Errorf("a sane id is kept and echoed: got %+v", r)
	}
	for _, bad := range []string{"", "has space", strings.Repeat("a", 65), "*/;DROP TABLE x;--", "a'b", "é", "a\tb"} {
		r := get(context.Background(), c, srv.URL, RequestIDHeader, bad)
		handlerID := <-seen
		u, err := uuid.Parse(r.id)
		if r.err != nil || err != nil || u.Version() != 7 || handlerID != r.id {
			t.Errorf("X-Request-ID %q: response id %q (handler saw %q), want a fresh UUIDv7", bad, r.id, handlerID)
		}
	}
}

func FuzzRequestID(f *testing.F) {
	for _, s := range []string{"", "abc", "req-1.2_3", "*/", "a\nb", "\x00", "'; --", strings.Repeat("x", 10_000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		id := requestID(header)
		if !validRequestID(id) {
			t.Fatalf("requestID(%q) = %q, not a valid id", header, id)
		}
		if validRequestID(header) != (id == header) {
			t.Fatalf("requestID(%q) = %q: a header is kept if and only if it is valid", header, id)
		}
		for _, c := range id {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", c) {
				t.Fatalf("requestID(%q) = %q contains %q", header, id, c)
			}
		}
	})
}

// TestClientDisconnect is the case the library exists for: a client hangs up
// while its fan-out runs. Its queued queries must never start, its running
// ones must stop, and the pool must be idle almost at once.
func TestClientDisconnect(t *testing.T) { eachLayout(t, inClientDisconnect) }

func inClientDisconnect(t *testing.T, l layout) {
	const workers = 4
	p := l.pool(t, Config{Workers: workers})
	started := make(chan string, 100)
	served := make(chan time.Time, 1)
	wrote := make(chan bool, 1)
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		rw := &writeRecorder{ResponseWriter: w}
		fanoutHandler(started)(rw, r) // WriteError gets the Fanout's context.Canceled
		wrote <- rw.wrote
	}, func() { served <- time.Now() })

	ctx, hangUp := context.WithCancel(context.Background())
	defer hangUp()
	replied := make(chan reply, 1)
	go func() { replied <- get(ctx, c, srv.URL+"?n=80&d=100s") }()
	for range workers {
		<-started
	}
	hungUp := time.Now()
	hangUp()

	var idleAt time.Time
	select {
	case idleAt = <-served:
	case <-time.After(5 * time.Second):
		t.Fatalf("the handler did not return within 5s of the disconnect: %+v", p.Stats())
	}
	if r := <-replied; !errors.Is(r.err, context.Canceled) {
		t.Errorf("client: %+v", r)
	}
	idle := idleAt.Sub(hungUp)
	s := p.Stats()
	t.Logf("disconnect to idle pool: %v; started after disconnect: %d; stats %+v", idle, len(started), s)
	if len(started) != 0 {
		t.Errorf("%d queries started after the client hung up, want 0", len(started))
	}
	if s.Running != 0 || s.Queued != 0 || s.Requests != 0 || s.Dropped != 80-workers {
		t.Errorf("after the disconnect: %+v, want idle with %d dropped", s, 80-workers)
	}
	if <-wrote {
		t.Error("WriteError wrote a response to a client that had gone away")
	}
	// Idle by count, not by a time window: the handler has returned, so the
	// 4 running queries have ended and the other 76 were dropped unstarted.
}

// writeRecorder records whether anything was written through it.
type writeRecorder struct {
	http.ResponseWriter
	wrote bool
}

func (w *writeRecorder) WriteHeader(code int) { w.wrote = true; w.ResponseWriter.WriteHeader(code) }
func (w *writeRecorder) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func TestPanickingHandlerReleasesEverything(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	served := make(chan struct{})
	strayDone := make(chan error, 1)
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		running := make(chan struct{}, 2)
		go func() { // work the handler does not wait for
			strayDone <- Fanout(r.Context(), repeat(10, Func(func(ctx context.Context) error {
				running <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			}))...)
		}()
		<-running
		<-running
		panic("handler bug")
	}, func() { close(served) })

	if r := get(context.Background(), c, srv.URL); r.err == nil {
		t.Errorf("a panicking handler answered %d", r.status)
	}
	<-served
	if s := p.Stats(); s.Running != 0 || s.Queued != 0 || s.Requests != 0 {
		t.Errorf("after the panic: %+v, want nothing running, queued or live", s)
	}
	if err := <-strayDone; !errors.Is(err, context.Canceled) {
		t.Errorf("stray Fanout = %v", err)
	}
}

// launch sends a GET at the given offset from start, from its own goroutine,
// and delivers the reply with doneAt set.
func launch(c *http.Client, url string, start time.Time, at time.Duration, out chan<- reply) {
	go func() {
		time.Sleep(time.Until(start.Add(at)))
		r := get(context.Background(), c, url)
		r.doneAt = time.Since(start)
		out <- r
	}()
}

// TestFairSeedCase is the case from the Flask/ThreadPoolExecutor question,
// with Workers=4: two requests of n queries, the second arriving once the
// first's queries run. The one nearer completion goes first, so every query
// of the first completes before any of the second: they finish at n/4×T
// and 2×n/4×T, which no policy beats. Round-robin would interleave them and
// finish the first later. The order of completions is the assertion; the
// times are logged.
func TestFairSeedCase(t *testing.T) { eachLayout(t, inFairSeedCase) }

func inFairSeedCase(t *testing.T, l layout) {
	const (
		T       = 100 * time.Millisecond
		workers = 4
	)
	p := l.pool(t, Config{Workers: workers})
	var mu sync.Mutex // protects order
	var order []string
	startedA := make(chan struct{}, 64) // a query of the first request started
	srv, cl := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		tag := r.URL.Query().Get("tag")
		q := Func(func(ctx context.Context) error {
			if tag == "a" {
				startedA <- struct{}{}
			}
			err := sleep(T).run(ctx)
			mu.Lock()
			order = append(order, tag)
			mu.Unlock()
			return err
		})
		WriteError(w, r, Fanout(r.Context(), repeat(n, q)...))
	}, nil)
	url := func(n int, tag string) string { return fmt.Sprintf("%s?n=%d&tag=%s", srv.URL, n, tag) }

	for _, n := range []int{4, 8} { // queries per request
		t.Run(fmt.Sprintf("%dx%d", n, n), func(t *testing.T) {
			mu.Lock()
			order = nil
			mu.Unlock()
			first, second := make(chan reply, 1), make(chan reply, 1)
			start := time.Now()
			launch(cl, url(n, "a"), start, 0, first)
			for range workers { // the first request's queries hold every worker
				<-startedA
			}
			launch(cl, url(n, "b"), start, 0, second)
			r1, r2 := <-first, <-second
			for len(startedA) > 0 {
				<-startedA
			}
			t.Logf("finished at %v and %v (T=%v)", r1.doneAt, r2.doneAt, T)
			for _, r := range []reply{r1, r2} {
				if r.err != nil || r.status != http.StatusOK {
					t.Fatalf("reply %+v", r)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			want := slices.Concat(slices.Repeat([]string{"a"}, n), slices.Repeat([]string{"b"}, n))
			if !slices.Equal(order, want) {
				t.Errorf("completions %v, want every query of the first request before any of the second", order)
			}
		})
	}
}

// TestSmallBehindLarge: one request of 160×20 ms takes all 8 workers; 12
// requests of 2×20 ms arrive 25 ms apart while it runs. A FIFO pool makes
// each wait for every queued query of the large one (over 100 of them);
// here a small request waits for the next free slot, so at most one wave of
// the large one's queries (8) completes while it waits, and another while
// its own run: counted, at most 3×Workers, whatever the machine's speed.
func TestSmallBehindLarge(t *testing.T) { eachLayout(t, inSmallBehindLarge) }

func inSmallBehindLarge(t *testing.T, l layout) {
	const (
		T       = 20 * time.Millisecond
		workers = 8
	)
	p := l.pool(t, Config{Workers: workers, MaxFanout: 160})
	var bigDone atomic.Int64 // queries of the big request completed
	started := make(chan struct{}, 512)
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		big := n > 2
		q := Func(func(ctx context.Context) error {
			if big {
				started <- struct{}{}
				defer bigDone.Add(1)
			}
			return sleep(T).run(ctx)
		})
		before := bigDone.Load()
		if err := Fanout(r.Context(), repeat(n, q)...); err != nil {
			WriteError(w, r, err)
			return
		}
		fmt.Fprint(w, bigDone.Load()-before)
	}, nil)
	bigURL := fmt.Sprintf("%s?n=160", srv.URL)
	smallURL := fmt.Sprintf("%s?n=2", srv.URL)

	alone := get(context.Background(), c, bigURL)
	if alone.err != nil || alone.status != http.StatusOK {
		t.Fatalf("big request alone: %+v", alone)
	}
	for len(started) > 0 {
		<-started
	}

	big := make(chan reply, 1)
	go func() { big <- get(context.Background(), c, bigURL) }()
	for range workers { // the big request holds every worker
		<-started
	}
	smalls := make(chan reply, 12)
	start := time.Now()
	for i := range 12 {
		launch(c, smallURL, start, time.Duration(i)*25*time.Millisecond, smalls)
	}
	var lat []time.Duration
	var waited []int
	for range 12 {
		r := <-smalls
		if r.err != nil || r.status != http.StatusOK {
			t.Fatalf("small request: %+v", r)
		}
		n, _ := strconv.Atoi(r.body)
		lat = append(lat, r.latency)
		waited = append(waited, n)
	}
	b := <-big
	if b.err != nil || b.status != http.StatusOK {
		t.Fatalf("big request: %+v", b)
	}
	slices.Sort(lat)
	slices.Sort(waited)
	t.Logf("small requests: big queries completed meanwhile %v; latency p50 %v, p95 %v (T=%v); big: %v alone, %v with them (%.2fx)",
		waited, percentile(lat, 50), percentile(lat, 95), T, alone.latency, b.latency, float64(b.latency)/float64(alone.latency))
	if most := waited[len(waited)-1]; most > 3*workers {
		t.Errorf("a small request waited while %d queries of the big one completed, want <= 3×Workers = %d", most, 3*workers)
	}
	if float64(b.latency) > 1.3*float64(alone.latency) {
		t.Errorf("the big request took %v, more than 1.3x its %v alone", b.latency, alone.latency)
	}
}

// stream starts clients that each send GETs to url(client) back to back,
// and returns once each has been answered about rounds times (the stream is
// flowing). stop ends the stream and waits for the clients.
func stream(c *http.Client, rounds int, url func(client int) string, clients int) (stop func()) {
	done := make(chan struct{})
	var served atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if r := get(context.Background(), c, url(i)); r.err == nil {
					served.Add(1)
				}
			}
		})
	}
	for served.Load() < int64(rounds*clients) {
		runtime.Gosched()
	}
	return func() { close(done); wg.Wait() }
}

// percentile returns the nearest-rank percentile of sorted.
func percentile(sorted []time.Duration, pct float64) time.Duration {
	rank := int(math.Ceil(pct / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

// TestNoStarvation: a steady stream of one-query requests keeps both workers
// busy and the queue non-empty. Fewest-remaining-first alone would never run
// a 10-query request; with aging it is overtaken only by requests that
// arrive before the pool completes 10×Workers more queries, so it is done
// within n×Workers + QueueSize + n + Workers completions of its admission
// (see Pool). Counting completions makes the bound exact, whatever the
// machine's speed.
func TestNoStarvation(t *testing.T) { eachLayout(t, inNoStarvation) }

func inNoStarvation(t *testing.T, l layout) {
	const (
		T         = 10 * time.Millisecond
		workers   = 2
		queueSize = 16
		clients   = 6
		n         = 10
	)
	p := l.pool(t, Config{Workers: workers, QueueSize: queueSize})
	srv, c := serve(t, p, fanoutHandler(nil), nil)

	stop := stream(c, 2, func(int) string { return fmt.Sprintf("%s?n=1&d=%v", srv.URL, T) }, clients)
	defer stop()

	before := p.Stats().Completed
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // starving, it would wait forever
	defer cancel()
	r := get(ctx, c, fmt.Sprintf("%s?n=%d&d=%v", srv.URL, n, T))
	completed := p.Stats().Completed - before
	// The count runs from before the request was sent to after its answer,
	// so it may include up to Workers completions more than the bound's.
	bound := uint64(n*workers + queueSize + n + 2*workers)
	t.Logf("the %d-query request took %v amid the stream: %d queries completed meanwhile (bound %d)",
		n, r.latency, completed, bound)
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("large request: %+v", r)
	}
	if completed > bound {
		t.Errorf("%d queries completed during the large request, above the aging bound %d", completed, bound)
	}
	if completed < 2*n {
		t.Errorf("only %d queries completed meanwhile: the stream did not compete", completed)
	}
}

func TestWriteErrorThroughServer(t *testing.T) {
	p := newPool(t, Config{Workers: 1, QueueSize: 1, MaxFanout: 2, RetryAfter: 1500 * time.Millisecond})
	hold := make(chan struct{})
	holding := make(chan struct{}, 1) // each /hold request signals once it holds
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var q Query
		switch r.URL.Path {
		case "/hold": // takes the only worker and the only queue place
			q = Func(func(ctx context.Context) error {
				holding <- struct{}{}
				select {
				case <-hold:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			WriteError(w, r, Fanout(ctx, q, sleep(0)))
			return
		case "/deadline":
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 5*time.Millisecond)
			defer cancel()
			q = sleep(time.Hour)
		case "/internal":
			q = Func(func(context.Context) error {
				return errors.New(`pq: relation "secret_table" does not exist in SELECT password FROM secret_table`)
			})
		default:
			q = sleep(0)
		}
		if err := Fanout(ctx, q); err != nil {
			WriteError(w, r, err)
			return
		}
		io.WriteString(w, "ok")
	}, nil)

	held := make(chan reply, 1)
	go func() { held <- get(context.Background(), c, srv.URL+"/hold") }()
	<-holding
	if r := get(context.Background(), c, srv.URL+"/ok"); r.status != http.StatusServiceUnavailable || r.retry != "2" {
		t.Errorf("queue full: %d with Retry-After %q, want 503 with 2", r.status, r.retry)
	}
	hold <- struct{}{}
	if r := <-held; r.status != http.StatusOK {
		t.Errorf("/hold: %+v", r)
	}
	if r := get(context.Background(), c, srv.URL+"/deadline"); r.status != http.StatusGatewayTimeout {
		t.Errorf("deadline: %d, want 504", r.status)
	}
	r := get(context.Background(), c, srv.URL+"/internal")
	if r.status != http.StatusInternalServerError || strings.Contains(r.body, "secret") || strings.Contains(r.body, "pq") {
		t.Errorf("internal error: %d %q, want 500 without the error's text", r.status, r.body)
	}
	// A Shutdown that runs out of time cancels the request in flight, which
	// is answered 503 (not left empty as for a client that went away).
	go func() { held <- get(context.Background(), c, srv.URL+"/hold") }()
	<-holding
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v", err)
	}
	if r := <-held; r.status != http.StatusServiceUnavailable || r.retry != "2" {
		t.Errorf("request cut off by Shutdown: %d with Retry-After %q, want 503 with 2", r.status, r.retry)
	}
	close(hold)
	if r := get(context.Background(), c, srv.URL+"/ok"); r.status != http.StatusServiceUnavailable || r.retry != "2" {
		t.Errorf("closed pool: %d with Retry-After %q, want 503 with 2", r.status, r.retry)
	}
}

// TestOneAnswerUnderTimeoutHandler: behind http.TimeoutHandler, a Fanout cut
// off by the request's deadline is answered once, by TimeoutHandler (503 and
// its message), and the server logs no superfluous WriteHeader.
func TestOneAnswerUnderTimeoutHandler(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	var logged strings.Builder
	var mu sync.Mutex // protects logged
	h := http.TimeoutHandler(Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, Fanout(r.Context(), sleep(time.Hour), sleep(time.Hour)))
	})), 20*time.Millisecond, "timed out")
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(b)
	}), "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	for range 5 {
		r := get(context.Background(), srv.Client(), srv.URL)
		if r.status != http.StatusServiceUnavailable || r.body != "timed out" {
			t.Errorf("answered %d %q, want TimeoutHandler's 503 %q", r.status, r.body, "timed out")
		}
	}
	srv.Close()
	mu.Lock()
	defer mu.Unlock()
	if logged.Len() > 0 {
		t.Errorf("server logged: %s", logged.String())
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestAbortHandler: a query that panics with http.ErrAbortHandler aborts
// the response, as net/http does for a handler that panics with it: the
// client gets no answer, and nothing of the request is left in the pool.
func TestAbortHandler(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	released := make(chan struct{}, 1)
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, Fanout(r.Context(),
			Func(func(context.Context) error { panic(http.ErrAbortHandler) }),
			sleep(time.Hour)))
		t.Error("WriteError returned after an ErrAbortHandler panic")
	}, func() { released <- struct{}{} })
	r := get(context.Background(), c, srv.URL)
	<-released
	if r.err == nil {
		t.Errorf("answered %d %q, want the response aborted", r.status, r.body)
	}
	if s := p.Stats(); s.Running != 0 || s.Queued != 0 || s.Requests != 0 {
		t.Errorf("after the abort: %+v", s)
	}
}

func TestRequestIDAndErrorStatus(t *testing.T) {
	if id := RequestID(context.Background()); id != "" {
		t.Errorf("RequestID without a handle = %q, want \"\"", id)
	}
	p := newPool(t, Config{})
	ctx, release := p.newContext(context.Background(), "req-9")
	defer release()
	if id := RequestID(ctx); id != "req-9" {
		t.Errorf("RequestID = %q, want req-9", id)
	}
	if canonicalRequestIDHeader != http.CanonicalHeaderKey(RequestIDHeader) {
		t.Errorf("canonicalRequestIDHeader %q, want %q", canonicalRequestIDHeader, http.CanonicalHeaderKey(RequestIDHeader))
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	expired, cancel := context.WithDeadline(context.Background(), time.Now())
	defer cancel()
	gone, hangUp := context.WithCancel(context.Background())
	hangUp()
	for _, tc := range []struct {
		name string
		r    *http.Request
		err  error
		want int
	}{
		{"nil", req, nil, 0},
		{"queue full", req, ErrQueueFull, 503},
		{"db unavailable", req, fmt.Errorf("x: %w", ErrDBUnavailable), 503},
		{"fanout deadline", req, context.DeadlineExceeded, 504},
		{"request deadline", req.WithContext(expired), context.DeadlineExceeded, 0},
		{"client gone", req.WithContext(gone), context.Canceled, 0},
		{"abort", req, &QueryError{Err: &PanicError{Value: http.ErrAbortHandler}}, 0},
		{"other", req, errors.New("boom"), 500},
	} {
		if got := ErrorStatus(tc.r, tc.err); got != tc.want {
			t.Errorf("%s: ErrorStatus = %d, want %d", tc.name, got, tc.want)
		}
	}
}
