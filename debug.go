package reqpool

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/reqpool/reqpool/internal/debugpage"
)

// The page itself (its HTML and JSON, the window of queries behind its
// distributions, the charts) is package internal/debugpage's, which knows
// no type of this package: this file decides who may see it, builds its
// Snapshot from Config, Stats and the scheduler's live requests, and feeds
// its Window the queries that ran.

// DebugHandler returns an http.Handler that serves a live page about p, in
// the spirit of golang.org/x/net/trace's /debug/requests. The page shows:
//
//   - the configuration, with the defaults filled in (Config);
//   - the gauges and counters (Stats);
//   - when the pool has Classes, a Classify, or requests in named flows:
//     each class with its share, queue bound, gauges and counters
//     (Stats.Classes, among them how many named flows it has);
//   - the queue wait and the run time of the latest 2,048 queries that ran,
//     each as p50, p90, p99 and max, and a histogram;
//   - every live request that has fanned out: its id, its class and flow
//     (when the classes are shown), its age (since its first Fanout), its
//     queued and running queries, and its place in its flow's queue (1 for
//     the request whose query its flow starts next; none for a request with
//     nothing queued, or at its PerRequest cap).
//
// It refreshes itself every 2 seconds, runs no script and loads nothing
// from elsewhere, so it works offline. With ?format=json the handler
// serves the same as one JSON object:
//
//	{
//	  "time": "2026-11-25T15:20:31.5Z",
//	  "config": {"Workers": 16, "QueueSize": 1024, ..., "Classes": [{"Name": "web", "Share": 3, ...}, ...]},
//	  "stats": {"Workers": 16, "Running": 16, "Queued": 40, "Requests": 3, "Submitted": 5120, ...,
//	            "Classes": [{"Name": "web", "Running": 12, "Queued": 4, "Flows": 2, ...}, ...]},
//	  "requests": [{"id": "report-7", "class": "web", "flow": "tenant-42", "age_seconds": 1.52,
//	                "queued": 36, "running": 4, "place": 2}, ...],
//	  "window": {"queries": 2048, "since": "2026-11-25T15:20:20.1Z"},
//	  "queue_wait": {"p50_seconds": 0.0012, "p90_seconds": 0.0081, "p99_seconds": 0.021, "max_seconds": 0.034},
//	  "run_time": {"p50_seconds": 0.0031, ...}
//	}
//
// "config" and "stats" hold the fields of Config and Stats under their Go
// names, so that they decode into those types (RetryAfter in nanoseconds;
// Classify is left out). A class's share and queue bound are in
// config.Classes (null without Classes), its gauges and counters in
// stats.Classes, which has one entry per class (one named "" without
// Classes).
//
// "requests" lists the requests in the queue first (those with queries
// queued and below their PerRequest cap), then the other live requests,
// oldest first, whose "place" is 0. "class" is the request's class (""
// without Classes) and "flow" its flow ("" for none: a class's flowless
// requests share one flow). The requests in the queue come grouped by
// class, in Config.Classes' order; in a class, by flow, in the order the
// class would serve its flows now (fewest queries executing first, then the
// one whose turn came longest ago); in a flow, in the order the flow serves
// them (see Pool). Their "place" is their rank in their flow: 1 for the
// flow's next. Which class and flow a free slot goes to depends on what is
// executing when it frees up, so no rank across flows would hold. With one
// class and no named flows, as in a pool without Classes and Classify, the
// list is the pool's queue in order and the place a request's rank in it.
//
// "window" says how many queries the distributions cover and when the
// oldest of them ended ("since" is absent while there are none).
//
// The page shows request ids, which can come from clients' X-Request-ID
// headers, and what every request is doing, so by default it answers only
// clients on a loopback address (127.0.0.0/8, ::1), and others 403, as
// golang.org/x/net/trace does: mounting it on a public mux, as people do
// with net/http/pprof, publishes nothing. Behind a reverse proxy on the
// same host every client is on loopback: serve it on an internal listener
// instead. To let other clients in, use DebugHandlerFor with a check of
// your own (an authenticated operator, an internal network):
//
//	internal.Handle("/debug/reqpool", pool.DebugHandler())
//
// Cost. The first call attaches an Observer to p (see Observe) for the rest
// of p's life, so that the distributions have history; every later call
// returns the same handler. From then on each query pays what an Observer
// costs (clock reads; see BenchmarkObserve) plus a few stores under a mutex
// of the page's own, never the scheduler's, and the distributions cover
// the queries that ran since that first call, in a fixed 80 KB. Each view
// of the page holds the scheduler's lock twice, once for Stats and once to
// copy the live requests (O(live requests)); sorting, the percentiles and
// the rendering run outside it.
func (p *Pool) DebugHandler() http.Handler { return p.debugPage().loopback }

// DebugHandlerFor returns DebugHandler's page for the clients that allow
// lets in; the others get 403. allow runs for every request; a nil allow
// lets in the loopback clients, as DebugHandler does.
//
//	mux.Handle("/debug/reqpool", pool.DebugHandlerFor(func(r *http.Request) bool {
//		return isOperator(r) // the application's own authentication
//	}))
func (p *Pool) DebugHandlerFor(allow func(r *http.Request) bool) http.Handler {
	if allow == nil {
		allow = fromLoopback
	}
	return &debugAccess{page: p.debugPage().page, allow: allow}
}

// debugPage returns p's page, made and its Observer attached on the first
// call.
func (p *Pool) debugPage() *debugHandler {
	if h := p.debug.Load(); h != nil {
		return h
	}
	page := debugpage.New(p.debugSnapshot)
	h := &debugHandler{page: page, loopback: &debugAccess{page: page, allow: fromLoopback}}
	if !p.debug.CompareAndSwap(nil, h) {
		return p.debug.Load()
	}
	p.Observe(debugObserver{page.Window()})
	return h
}

// debugHandler is p's page, one per pool, and what DebugHandler returns.
type debugHandler struct {
	page     *debugpage.Handler
	loopback *debugAccess // the page for loopback clients
}

// debugAccess serves page to the clients that allow lets in, and 403 to
// the others.
type debugAccess struct {
	page  *debugpage.Handler
	allow func(r *http.Request) bool
}

func (a *debugAccess) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.allow(r) {
		http.Error(w, "forbidden: reqpool's debug page answers loopback clients only (see Pool.DebugHandlerFor)", http.StatusForbidden)
		return
	}
	a.page.ServeHTTP(w, r)
}

// fromLoopback reports whether r's client is on a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// debugObserver is the Observer behind the page: it adds to the page's
// Window the queries that ran. Dropped queries never ran and are not added
// (Stats.Dropped counts them), nor are refused Fanouts (Stats.Rejected).
type debugObserver struct{ window *debugpage.Window }

// QueryDone implements Observer.
func (o debugObserver) QueryDone(_ context.Context, rec QueryRecord) {
	if rec.Started.IsZero() {
		return // dropped
	}
	o.window.Add(rec.Wait(), rec.Run(), rec.Finished)
}

// Refused implements Observer; Stats.Rejected counts refusals.
func (debugObserver) Refused(context.Context, Refusal) {}

// debugSnapshot is the page's Source: p's configuration and figures, its
// classes when the page shows them, and its live requests. It holds the
// scheduler's lock twice, in Stats and in LiveRequests, and no lock while
// it converts.
func (p *Pool) debugSnapshot() debugpage.Snapshot {
	cfg, st := p.Config(), p.Stats()
	s := debugpage.Snapshot{Config: cfg, Stats: st}
	classes := cfg.classes() // in the order of st.Classes
	for _, c := range classes {
		s.QueueBound += c.QueueSize
	}
	if classesShown(cfg, st) {
		s.Classes = make([]debugpage.Class, len(classes))
		for i, c := range classes {
			s.Classes[i] = debugClass(c, st.Classes[i])
		}
	}
	live := p.sched.LiveRequests()
	s.Time = time.Now() // after the copy: no age is negative
	s.Requests = make([]debugpage.Request, len(live))
	for i, r := range live {
		s.Requests[i] = debugpage.Request{ID: r.ID, Class: r.Class, Flow: r.Flow, Since: r.Since,
			Queued: r.Queued, Running: r.Running, Place: r.Place}
	}
	return s
}

// debugClass is class c's row on the page: its settings, after defaults,
// and its figures st.
func debugClass(c Class, st ClassStats) debugpage.Class {
	return debugpage.Class{Name: st.Name, Share: c.Share, QueueSize: c.QueueSize,
		Running: st.Running, Queued: st.Queued, Flows: st.Flows,
		Submitted: st.Submitted, Completed: st.Completed, Failed: st.Failed,
		Cancelled: st.Cancelled, Dropped: st.Dropped, Rejected: st.Rejected}
}

// classesShown reports whether the page shows the classes table and the
// requests' class and flow: when the pool has Classes or a Classify, which
// holds for its whole life, or else while some request is in a named flow
// (NewClassContext). A plain pool's page has no column that would always
// be empty.
func classesShown(cfg Config, st Stats) bool {
	if len(cfg.Classes) > 0 || cfg.Classify != nil {
		return true
	}
	for _, c := range st.Classes {
		if c.Flows > 0 {
			return true
		}
	}
	return false
}
