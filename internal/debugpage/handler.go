package debugpage

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// A Source takes a Snapshot of the pool, once for each view of the page. It
// runs on the goroutine that serves the view and must be safe for
// concurrent use: two clients may view the page at once.
type Source func() Snapshot

// A Snapshot is what the page shows of the pool at one moment, apart from
// the distributions, which come from the Window.
type Snapshot struct {
	// Time is when the snapshot was taken: after the requests were copied,
	// so that no request's age (Time minus its Since) is negative.
	Time time.Time

	// Config and Stats are the pool's configuration, with its defaults
	// filled in, and its figures: the root package's Config and Stats. The
	// JSON gives them as they encode ("config" and "stats"), and the
	// template reads their fields by name (see page.tmpl), so that this
	// package need not know their types: a field the template reads that
	// the value lacks fails the rendering, and the view gets a 500.
	Config, Stats any

	// QueueBound is the pool's queue bound: the sum of its classes' queue
	// bounds (Config.QueueSize without Classes).
	QueueBound int

	// Classes is one row for each of the pool's classes, in Config.Classes'
	// order, or nil when the page shows no classes: then it has no classes
	// table, and no class or flow column in its requests.
	Classes []Class

	// Requests are the live requests that have fanned out, in the order the
	// page lists them.
	Requests []Request
}

// A Class is one class's row on the page: its settings, after defaults,
// and its figures (the root package's Class and ClassStats).
type Class struct {
	Name             string // "" for the one class of a pool without Classes
	Share, QueueSize int

	Running, Queued, Flows int // gauges: now

	// Counters: since the pool was made.
	Submitted, Completed, Failed, Cancelled, Dropped, Rejected uint64
}

// A Request is one live request that has fanned out.
type Request struct {
	ID    string
	Class string    // "" in a pool without Classes
	Flow  string    // "": in no named flow
	Since time.Time // when it registered; no later than Snapshot.Time

	Queued  int // its queries admitted and not started
	Running int // its queries executing in slots of their own
	Place   int // its rank in its flow's queue, from 1; 0: not in it (nothing queued, or at its PerRequest cap)
}

// A Handler serves the page, or with ?format=json its JSON. It serves every
// client that reaches it: keeping the others out is for whoever mounts it.
// Make one with New.
type Handler struct {
	source Source
	window Window // the distributions' queries, added by the Handler's owner
}

// New returns a Handler that shows what source takes, and the queries
// added to its Window, from then on.
func New(source Source) *Handler { return &Handler{source: source} }

// Window returns the Window that h's distributions cover, for its owner to
// add the queries that run.
func (h *Handler) Window() *Window { return &h.window }

// refresh is how often the page reloads itself, in seconds.
const refresh = 2

// ServeHTTP serves the page, or with ?format=json its JSON, to GET and
// HEAD. It renders into a buffer first, so that an error sends no half
// page and HEAD gets the Content-Length that GET would.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
		err = pageTemplate().Execute(&body, v)
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

//go:embed page.tmpl
var pageText string

// pageTemplate parses the page's template on first use, so that a program
// that never serves the page never pays for it.
var pageTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("debug").Parse(pageText))
})
