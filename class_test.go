package reqpool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A layout is where a test's requests are scheduled: in the pool's one
// class, as without Classes, or in a class (and a flow) of a pool with two.
// The guarantees of the pool hold inside a class and a flow as they hold in
// the whole pool; eachLayout runs a test in every layout.
type layout struct {
	name        string
	class, flow string // "": no Classes
}

var layouts = []layout{
	{name: "one class"},
	{name: "class web", class: "web"},
	{name: "flow t1 of class web", class: "web", flow: "t1"},
}

func eachLayout(t *testing.T, test func(t *testing.T, l layout)) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) { test(t, l) })
	}
}

// config returns cfg with l's classes and Classify. The layout's class is
// not the first, so that a request put in the first class by mistake shows
// (pool checks it).
func (l layout) config(cfg Config) Config {
	if l.class != "" {
		cfg.Classes = []Class{{Name: "jobs"}, {Name: l.class, Share: 3}}
		cfg.Classify = func(*http.Request) (string, string) { return l.class, l.flow }
	}
	return cfg
}

// pool returns newPool's pool for l, and checks when the test ends that no
// query ran outside l's class.
func (l layout) pool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p := newPool(t, l.config(cfg))
	t.Cleanup(func() {
		st := p.Stats()
		for _, c := range st.Classes {
			if c.Name != l.class && c.Submitted+c.Rejected > 0 {
				t.Errorf("class %q saw work (%+v), want all of it in %q", c.Name, c, l.class)
			}
		}
	})
	return p
}

// newContext returns a context with a handle onto p in l's class and flow.
func (l layout) newContext(t *testing.T, p *Pool) (context.Context, context.CancelFunc) {
	ctx, cancel, err := p.NewClassContext(context.Background(), l.class, l.flow)
	if err != nil {
		t.Errorf("NewClassContext: %v", err) // t.Errorf: may run in a goroutine
		return p.NewContext(context.Background())
	}
	return ctx, cancel
}

// handle is handleCtx for l.
func (l layout) handle(t *testing.T, p *Pool) context.Context {
	ctx, cancel := l.newContext(t, p)
	t.Cleanup(cancel)
	return ctx
}

func TestNewValidatesClasses(t *testing.T) {
	for _, cfg := range []Config{
		{Classes: []Class{{Name: ""}}},
		{Classes: []Class{{Name: "a"}, {Name: "a"}}},
		{Classes: []Class{{Name: "a", Share: -1}}},
		{Classes: []Class{{Name: "a", Share: MaxShare + 1}}},
		{Classes: []Class{{Name: "a", QueueSize: -1}}},
		{Workers: 4, MaxFanout: 11, Classes: []Class{{Name: "a", QueueSize: 6}, {Name: "b", QueueSize: 5}}}, // 11 > 4+6
	} {
		if p, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, %v; want ErrInvalidConfig", cfg.Classes, p, err)
		}
	}
	p, err := New(Config{Workers: 4, QueueSize: 50, Classes: []Class{{Name: "a"}, {Name: "b", Share: 2, QueueSize: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.Config()
	if want := []Class{{Name: "a", Share: DefaultShare, QueueSize: 50}, {Name: "b", Share: 2, QueueSize: 5}}; !slices.Equal(cfg.Classes, want) {
		t.Errorf("classes after defaults %+v, want %+v", cfg.Classes, want)
	}
	if cfg.MaxFanout != 4+50 {
		t.Errorf("MaxFanout %d, want Workers plus the largest class queue, 54", cfg.MaxFanout)
	}
	// A Fanout that class b could never admit is refused as too many.
	ctx, cancel, err := p.NewClassContext(context.Background(), "b", "")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if err := Fanout(ctx, repeat(4+5+1, Func(noop))...); !errors.Is(err, ErrTooManyQueries) || p.Stats().Classes[1].Rejected != 1 {
		t.Errorf("10 queries in class b (fits 9): %v, %+v", err, p.Stats().Classes[1])
	}
	if err := Fanout(ctx, repeat(4+5, Func(noop))...); err != nil {
		t.Errorf("9 queries in class b: %v", err)
	}
	p.Shutdown(context.Background())
}

// twoClasses are an interactive class with three times the share of a
// batch class.
var twoClasses = []Class{{Name: "interactive", Share: 3}, {Name: "batch", Share: 1}}

// TestUnknownClass: a class that the pool does not have fails the
// request's Fanouts, through the server as a plain 500, and fails
// NewClassContext; nothing runs in another class.
func TestUnknownClass(t *testing.T) {
	p := newPool(t, Config{Workers: 2, Classes: twoClasses,
		Classify: func(r *http.Request) (string, string) { return r.URL.Query().Get("class"), "" }})
	var ran sync.WaitGroup
	var errs sync.Map
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
		defer ran.Done()
		err := Fanout(r.Context(), Func(noop))
		errs.Store(r.URL.Query().Get("class"), err)
		WriteError(w, r, err)
	}, nil)
	for _, class := range []string{"nope", "", "batch"} {
		r := get(context.Background(), c, srv.URL+"?class="+class)
		want := http.StatusOK
		if class == "nope" {
			want = http.StatusInternalServerError
		}
		if r.err != nil || r.status != want || strings.Contains(r.body, "nope") {
			t.Errorf("class %q: %+v, want %d without the error's text", class, r, want)
		}
	}
	if err, _ := errs.Load("nope"); !errors.Is(err.(error), ErrUnknownClass) {
		t.Errorf("Fanout in class \"nope\" = %v, want ErrUnknownClass", err)
	}
	st := p.Stats()
	if st.Classes[0].Completed != 1 || st.Classes[1].Completed != 1 || st.Rejected != 0 {
		t.Errorf("stats %+v: want one query in each class (\"\" is the first), nothing else", st)
	}
	if ctx, cancel, err := p.NewClassContext(context.Background(), "nope", "x"); !errors.Is(err, ErrUnknownClass) || ctx != nil || cancel != nil {
		t.Errorf("NewClassContext(\"nope\") = %v, %v", ctx, err)
	}
}

// startLog records the class (or flow) of each query as it starts, in
// order, and makes the queries that must wait hold their slot until their
// tag's gate lets one of them go.
type startLog struct {
	mu     sync.Mutex // protects starts and gates
	starts []string
	gates  map[string]chan struct{}
	signal chan struct{} // a token per start
}

func newStartLog() *startLog {
	return &startLog{signal: make(chan struct{}, 1000), gates: map[string]chan struct{}{}}
}

// gate returns tag's gate: a send on it lets one held query of tag return.
func (l *startLog) gate(tag string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.gates[tag]
	if g == nil {
		g = make(chan struct{})
		l.gates[tag] = g
	}
	return g
}

// query returns a query that logs tag and, if hold, waits for tag's gate.
func (l *startLog) query(tag string, hold bool) Query {
	gate := l.gate(tag)
	return Func(func(ctx context.Context) error {
		l.mu.Lock()
		l.starts = append(l.starts, tag)
		l.mu.Unlock()
		l.signal <- struct{}{}
		if hold {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
}

// wait returns once n more queries have started.
func (l *startLog) wait(n int) {
	for range n {
		<-l.signal
	}
}

func (l *startLog) since(i int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.starts[i:])
}

// classServer serves /?tag=T&n=N&hold=1 behind Middleware(p): a Fanout of
// N queries logged as T, held at the gate when hold is set. Its replies
// come back on the returned channel.
func classServer(t *testing.T, p *Pool, log *startLog) (send func(query string, header ...string), replies chan reply) {
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var n int
		fmt.Sscan(q.Get("n"), &n)
		WriteError(w, r, Fanout(r.Context(), repeat(n, log.query(q.Get("tag"), q.Get("hold") != ""))...))
	}, nil)
	replies = make(chan reply, 100)
	return func(query string, header ...string) {
		go func() { replies <- get(context.Background(), c, srv.URL+"/?"+query, header...) }()
	}, replies
}

// TestClassesThroughServer is the batch flood, counted: batch work fills
// every worker and its own queue, yet an interactive request is admitted,
// and the workers that free up go to it first.
func TestClassesThroughServer(t *testing.T) {
	const workers, batchQueue = 2, 4
	p := newPool(t, Config{Workers: workers, Classes: []Class{{Name: "interactive", Share: 4}, {Name: "batch", QueueSize: batchQueue}},
		Classify: func(r *http.Request) (string, string) { return r.URL.Query().Get("tag"), "" }})
	log := newStartLog()
	send, replies := classServer(t, p, log)

	for range workers + batchQueue {
		send("tag=batch&n=1&hold=1")
	}
	log.wait(workers)
	for p.Stats().Classes[1].Queued < batchQueue {
		runtime.Gosched()
	}
	send("tag=batch&n=1&hold=1") // one too many: refused at once
	if r := <-replies; r.status != http.StatusServiceUnavailable {
		t.Fatalf("a batch request beyond its queue: %+v, want 503", r)
	}
	send("tag=interactive&n=2")
	for p.Stats().Classes[0].Queued < 2 {
		runtime.Gosched()
	}
	n := len(log.since(0))
	log.gate("batch") <- struct{}{} // one batch query ends: its worker goes to interactive
	if r := <-replies; r.err != nil || r.status != http.StatusOK {
		t.Fatalf("first reply %+v, want the released batch request's 200", r)
	}
	if r := <-replies; r.err != nil || r.status != http.StatusOK {
		t.Fatalf("second reply %+v, want the interactive request's 200", r)
	}
	log.wait(3) // interactive twice, then the batch queue moves on
	if got, want := log.since(n), []string{"interactive", "interactive", "batch"}; !slices.Equal(got, want) {
		t.Errorf("starts after a batch query ended: %v, want %v", got, want)
	}
	for range batchQueue + 1 {
		log.gate("batch") <- struct{}{}
	}
	for range batchQueue + 1 {
		if r := <-replies; r.status != http.StatusOK {
			t.Errorf("batch reply %+v", r)
		}
	}
	st := p.Stats()
	if c := st.Classes[0]; c.Rejected != 0 || c.Completed != 2 {
		t.Errorf("interactive %+v, want 2 completed, none refused", c)
	}
	if c := st.Classes[1]; c.Rejected != 1 || c.Completed != workers+batchQueue {
		t.Errorf("batch %+v, want %d completed and 1 refused", c, workers+batchQueue)
	}
}

// TestClassSharesThroughServer: batch came first and holds every worker;
// then interactive arrives, and as workers free up the split moves to the
// shares, 3 to 1, and stays there whichever class's query ends.
func TestClassSharesThroughServer(t *testing.T) {
	const workers = 4
	p := newPool(t, Config{Workers: workers, Classes: []Class{{Name: "interactive", Share: 3}, {Name: "batch", Share: 1}},
		Classify: func(r *http.Request) (string, string) { return r.URL.Query().Get("tag"), "" }})
	log := newStartLog()
	send, replies := classServer(t, p, log)
	running := func() []int {
		st := p.Stats()
		return []int{st.Classes[0].Running, st.Classes[1].Running}
	}
	send("tag=batch&n=20&hold=1")
	log.wait(workers)
	if got := running(); !slices.Equal(got, []int{0, workers}) {
		t.Fatalf("batch alone runs %v, want every worker", got)
	}
	send("tag=interactive&n=20&hold=1")
	for p.Stats().Classes[0].Queued < 20 {
		runtime.Gosched()
	}
	released := map[string]int{}
	for i, step := range []struct {
		ends string // the class whose query ends
		want []int
	}{
		{"batch", []int{1, 3}}, {"batch", []int{2, 2}}, {"batch", []int{3, 1}},
		{"interactive", []int{3, 1}}, {"batch", []int{3, 1}}, {"interactive", []int{3, 1}},
	} {
		log.gate(step.ends) <- struct{}{}
		released[step.ends]++
		log.wait(1) // its worker has started the next query: counted by then
		if got := running(); !slices.Equal(got, step.want) {
			t.Errorf("after %d completions (the last of %s): running %v, want %v", i+1, step.ends, got, step.want)
		}
	}
	// Interactive first: while it has work, it has queries running.
	for _, class := range []string{"interactive", "batch"} {
		for range 20 - released[class] {
			log.gate(class) <- struct{}{}
		}
	}
	for range 2 {
		if r := <-replies; r.status != http.StatusOK {
			t.Errorf("reply %+v", r)
		}
	}
}

// TestFlowsThroughServer is the tenants case, counted: tenant A's many
// requests hold every worker and fill the queue; tenant B's request takes
// the next worker that frees up, although A's requests came first.
func TestFlowsThroughServer(t *testing.T) {
	const workers, requestsA = 2, 10
	p := newPool(t, Config{Workers: workers,
		Classify: func(r *http.Request) (string, string) { return "", r.Header.Get("X-Tenant") }})
	log := newStartLog()
	send, replies := classServer(t, p, log)
	for range requestsA {
		send("tag=A&n=2&hold=1", "X-Tenant", "A")
	}
	log.wait(workers)
	for p.Stats().Queued < 2*requestsA-workers {
		runtime.Gosched()
	}
	send("tag=B&n=2", "X-Tenant", "B")
	for p.Stats().Queued < 2*requestsA-workers+2 {
		runtime.Gosched()
	}
	if f := p.Stats().Classes[0].Flows; f != 2 {
		t.Errorf("%d flows, want 2", f)
	}
	n := len(log.since(0))
	log.gate("A") <- struct{}{}
	if r := <-replies; r.err != nil || r.status != http.StatusOK {
		t.Fatalf("B: %+v", r)
	}
	log.wait(2)
	if got := log.since(n)[:2]; !slices.Equal(got, []string{"B", "B"}) {
		t.Errorf("starts after a query of A ended: %v, want B's two first", got)
	}
	for range 2*requestsA - 1 {
		log.gate("A") <- struct{}{}
	}
	for range requestsA {
		if r := <-replies; r.status != http.StatusOK {
			t.Errorf("A: %+v", r)
		}
	}
	if f := p.Stats().Classes[0].Flows; f != 0 {
		t.Errorf("%d flows left once every request ended, want 0", f)
	}
}

// TestNestedFanoutKeepsClassAndFlow: a query's own Fanout is its request's,
// in the same class and flow, as observers see.
func TestNestedFanoutKeepsClassAndFlow(t *testing.T) {
	p := newPool(t, Config{Workers: 1, Classes: twoClasses})
	var mu sync.Mutex
	var recs []QueryRecord
	defer p.Observe(funcObserver(func(rec QueryRecord) {
		mu.Lock()
		recs = append(recs, rec)
		mu.Unlock()
	}))()
	ctx, cancel, err := p.NewClassContext(context.Background(), "batch", "tenant-7")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	err = Fanout(ctx, Func(func(ctx context.Context) error {
		return Fanout(ctx, Func(noop), Func(noop))
	}))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for _, r := range recs {
		if r.Class != "batch" || r.Flow != "tenant-7" {
			t.Errorf("record %+v, want class batch, flow tenant-7", r)
		}
	}
	if c := p.Stats().Classes; c[1].Completed != 3 || c[0].Completed != 0 {
		t.Errorf("class stats %+v, want the 3 queries in batch", c)
	}
}

// TestNoStarvationBesideAnotherClass: the aging bound of a Fanout holds in
// its flow's completions while another class competes for the workers. A
// stream of one-query requests keeps class web's queue full and another
// stream keeps class jobs busy; a 10-query request of web is done within
// n×Workers + QueueSize + n + Workers completions of web (plus Workers for
// the count's slack, as in TestNoStarvation).
func TestNoStarvationBesideAnotherClass(t *testing.T) {
	const (
		T         = 10 * time.Millisecond
		workers   = 2
		queueSize = 16
		n         = 10
	)
	p := newPool(t, Config{Workers: workers, QueueSize: queueSize, Classes: []Class{{Name: "web"}, {Name: "jobs"}},
		Classify: func(r *http.Request) (string, string) { return r.URL.Query().Get("class"), "" }})
	srv, c := serve(t, p, fanoutHandler(nil), nil)

	stop := stream(c, 2, func(i int) string {
		class := "web"
		if i%3 == 0 {
			class = "jobs"
		}
		return fmt.Sprintf("%s?class=%s&n=1&d=%v", srv.URL, class, T)
	}, 9)
	defer stop()

	before := p.Stats().Classes
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := get(ctx, c, fmt.Sprintf("%s?class=web&n=%d&d=%v", srv.URL, n, T))
	after := p.Stats().Classes
	web, jobs := after[0].Completed-before[0].Completed, after[1].Completed-before[1].Completed
	bound := uint64(n*workers + queueSize + n + 2*workers)
	t.Logf("the %d-query request took %v: %d queries of web and %d of jobs completed meanwhile (bound %d for web)",
		n, r.latency, web, jobs, bound)
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("large request: %+v", r)
	}
	if web > bound {
		t.Errorf("%d queries of web completed during the large request, above the aging bound %d", web, bound)
	}
	if web < 2*n || jobs < n {
		t.Errorf("web %d, jobs %d completed meanwhile: the streams did not compete", web, jobs)
	}
}
