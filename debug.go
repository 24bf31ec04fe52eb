package reqpool

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"html/template"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

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
	return &debugAccess{page: p.debugPage(), allow: allow}
}

// debugPage returns p's page, made and its Observer attached on the first
// call.
func (p *Pool) debugPage() *debugHandler {
	if h := p.debug.Load(); h != nil {
		return h
	}
	h := &debugHandler{pool: p}
	h.loopback = &debugAccess{page: h, allow: fromLoopback}
	if !p.debug.CompareAndSwap(nil, h) {
		return p.debug.Load()
	}
	p.Observe(&h.window)
	return h
}

// debugAccess serves page to the clients that allow lets in, and 403 to
// the others.
type debugAccess struct {
	page  *debugHandler
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

// debugRefresh is how often the page reloads itself, in seconds.
const debugRefresh = 2

// debugHandler is the handler DebugHandler returns, one per pool.
type debugHandler struct {
	pool     *Pool
	window   window       // the Observer attached to pool
	loopback *debugAccess // what DebugHandler returns: the page for loopback clients
}

// ServeHTTP serves the page, or with ?format=json its JSON.
func (h *debugHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" {
		http.Error(w, "unknown format: want none (HTML) or json", http.StatusBadRequest)
		return
	}

	v := h.view()
	var body bytes.Buffer
	var err error
	if format == "json" {
		enc := json.NewEncoder(&body)
		enc.SetIndent("", "  ")
		err = enc.Encode(v)
	} else {
		err = debugTemplate().Execute(&body, v)
	}
	if err != nil { // a bug: say so rather than send half a page
		http.Error(w, "reqpool: rendering the debug page: "+err.Error(), http.StatusInternalServerError)
		return
	}

	hdr := w.Header()
	if format == "json" {
		hdr.Set("Content-Type", "application/json; charset=utf-8")
	} else {
		hdr.Set("Content-Type", "text/html; charset=utf-8")
		// Nothing but the page's own inline style: no script, no request
		// elsewhere, whatever a request id might contain.
		hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	}
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Length", strconv.Itoa(body.Len()))
	if r.Method != http.MethodHead {
		w.Write(body.Bytes())
	}
}

// debugView is what the page shows, and its JSON. The fields tagged "-"
// are the page's alone.
type debugView struct {
	Time      time.Time      `json:"time"`
	Config    Config         `json:"config"`
	Stats     Stats          `json:"stats"`
	Requests  []debugRequest `json:"requests"` // never nil: [] in JSON
	Window    debugWindow    `json:"window"`
	QueueWait distribution   `json:"queue_wait"`
	RunTime   distribution   `json:"run_time"`
	Refresh   int            `json:"-"` // seconds between reloads

	// The page's alone. QueueBound is the pool's queue bound: the sum of
	// its classes' (Config.QueueSize without Classes). Classes is nil
	// when the page shows no classes (see classesShown).
	QueueBound int          `json:"-"`
	Classes    []debugClass `json:"-"`
}

// debugRequest is one live request.
type debugRequest struct {
	ID      string  `json:"id"`
	Class   string  `json:"class"` // "" in a pool without Classes
	Flow    string  `json:"flow"`  // "": in no named flow
	Age     seconds `json:"age_seconds"`
	Queued  int     `json:"queued"`
	Running int     `json:"running"`
	Place   int     `json:"place"` // its rank in its flow's queue, from 1; 0: not in it (nothing queued, or at its PerRequest cap)
}

// debugClass is one class's row on the page: its Class settings, after
// defaults, and its figures.
type debugClass struct {
	ClassStats
	Share, QueueSize int
}

// debugWindow says what the distributions cover: the latest Queries
// queries that ran, the oldest of which ended at Since.
type debugWindow struct {
	Queries int       `json:"queries"`
	Since   time.Time `json:"since,omitzero"`
}

// distribution summarises one kind of duration over the window.
type distribution struct {
	P50   seconds `json:"p50_seconds"`
	P90   seconds `json:"p90_seconds"`
	P99   seconds `json:"p99_seconds"`
	Max   seconds `json:"max_seconds"`
	Chart chart   `json:"-"` // empty when the window is
}

// debugCard is one distribution's card on the page.
type debugCard struct {
	Title   string
	Summary distribution
	Window  debugWindow
}

// Distributions returns the page's distribution cards.
func (v debugView) Distributions() []debugCard {
	return []debugCard{{"Queue wait", v.QueueWait, v.Window}, {"Run time", v.RunTime, v.Window}}
}

// seconds is a duration that JSON gives as a number of seconds and the page
// shows rounded to three digits.
type seconds time.Duration

// MarshalJSON implements json.Marshaler.
func (s seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(s).Seconds(), 'f', -1, 64), nil
}

// String implements fmt.Stringer, for the page.
func (s seconds) String() string { return roundDuration(time.Duration(s)).String() }

// view takes the snapshots and computes what the page shows.
func (h *debugHandler) view() debugView {
	p := h.pool
	v := debugView{Config: p.Config(), Stats: p.Stats(), Refresh: debugRefresh}
	classes := v.Config.classes() // in the order of v.Stats.Classes
	for _, c := range classes {
		v.QueueBound += c.QueueSize
	}
	if classesShown(v.Config, v.Stats) {
		v.Classes = make([]debugClass, len(classes))
		for i, c := range classes {
			v.Classes[i] = debugClass{ClassStats: v.Stats.Classes[i], Share: c.Share, QueueSize: c.QueueSize}
		}
	}
	live := p.sched.LiveRequests()
	now := time.Now() // after the snapshot: no age is negative
	v.Time = now
	v.Requests = make([]debugRequest, len(live))
	for i, r := range live {
		v.Requests[i] = debugRequest{ID: r.ID, Class: r.Class, Flow: r.Flow, Age: seconds(now.Sub(r.Since)),
			Queued: r.Queued, Running: r.Running, Place: r.Place}
	}
	waits, runs, since := h.window.read()
	v.Window = debugWindow{Queries: len(waits), Since: since}
	v.QueueWait, v.RunTime = summarise(waits), summarise(runs)
	return v
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

// summarise returns the distribution of sorted, which may be empty.
func summarise(sorted []time.Duration) distribution {
	if len(sorted) == 0 {
		return distribution{}
	}
	d := distribution{
		P50: seconds(nearestRank(sorted, 50)),
		P90: seconds(nearestRank(sorted, 90)),
		P99: seconds(nearestRank(sorted, 99)),
		Max: seconds(sorted[len(sorted)-1]),
	}
	d.Chart = newChart(sorted, []chartMark{
		{"p50", time.Duration(d.P50)}, {"p90", time.Duration(d.P90)}, {"p99", time.Duration(d.P99)},
	})
	return d
}

//go:embed debug_page.tmpl
var debugPage string

// debugTemplate parses the page's template on first use, so that a program
// that never serves the page never pays for it.
var debugTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("debug").Parse(debugPage))
})
