package debugpage

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The root package's tests serve the page of a real pool (debug_test.go);
// these serve snapshots made up for the purpose, with Config and Stats of
// the types below.

// testConfig stands for the root package's Config: the fields the template
// reads, under their names.
type testConfig struct {
	Workers, QueueSize, PerRequest, MaxFanout int
	RetryAfter                                time.Duration
	DisableSQLComment                         bool
	Classes                                   []string
}

// testStats stands for the root package's Stats, as testConfig does.
type testStats struct {
	Workers, Running, Queued, Requests, Limit                  int
	LimitReason                                                string
	Submitted, Completed, Failed, Cancelled, Dropped, Rejected uint64
}

// testTime is the made-up snapshots' Time.
var testTime = time.Date(2026, 11, 25, 15, 20, 31, 500_000_000, time.UTC)

// idleSnapshot is a pool of 16 workers with nothing to do.
func idleSnapshot() Snapshot {
	return Snapshot{Time: testTime, QueueBound: 1024,
		Config: testConfig{Workers: 16, QueueSize: 1024, MaxFanout: 1040, RetryAfter: time.Second},
		Stats:  testStats{Workers: 16, Limit: 16}}
}

// serve has a Handler of snap serve method target, with samples added to
// its Window, and returns the response.
func serve(snap Snapshot, samples []sample, method, target string) *httptest.ResponseRecorder {
	h := New(func() Snapshot { return snap })
	for _, s := range samples {
		h.Window().Add(s.wait, s.run, s.finished)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

// TestDebugPageHTTP: the methods, the formats and the headers.
func TestDebugPageHTTP(t *testing.T) {
	w := serve(idleSnapshot(), nil, http.MethodGet, "/debug/reqpool")
	for k, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Cache-Control":           "no-store",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
		"Content-Length":          strconv.Itoa(w.Body.Len()),
	} {
		if got := w.Header().Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if w.Code != http.StatusOK {
		t.Errorf("GET: %d, want 200", w.Code)
	}
	// An idle pool: nothing to list, no history.
	for _, want := range []string{"No live request has fanned out.", "No query has run since the page was first served.", "do not expose it publicly"} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("the idle page does not say %q", want)
		}
	}
	w = serve(idleSnapshot(), nil, http.MethodGet, "/debug/reqpool?format=json")
	if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("JSON served as %q", ct)
	}
	if csp := w.Header().Get("Content-Security-Policy"); csp != "" {
		t.Errorf("JSON served with a Content-Security-Policy %q", csp)
	}

	get := serve(idleSnapshot(), nil, http.MethodGet, "/debug/reqpool")
	if w := serve(idleSnapshot(), nil, http.MethodHead, "/debug/reqpool"); w.Code != http.StatusOK || w.Body.Len() != 0 ||
		w.Header().Get("Content-Length") != strconv.Itoa(get.Body.Len()) {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q, want GET's %d", w.Code, w.Body.Len(), w.Header().Get("Content-Length"), get.Body.Len())
	}
	if w := serve(idleSnapshot(), nil, http.MethodPost, "/debug/reqpool"); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q", w.Code, w.Header().Get("Allow"))
	}
	if w := serve(idleSnapshot(), nil, http.MethodGet, "/debug/reqpool?format=xml"); w.Code != http.StatusBadRequest {
		t.Errorf("?format=xml: %d, want 400", w.Code)
	}
}

// busySnapshot is a pool of two classes with two live requests.
func busySnapshot() Snapshot {
	snap := idleSnapshot()
	snap.Config = testConfig{Workers: 2, QueueSize: 64, MaxFanout: 66, RetryAfter: time.Second, Classes: []string{"web", "batch"}}
	snap.Stats = testStats{Workers: 2, Limit: 2, Running: 2, Queued: 6, Requests: 2, Submitted: 8}
	snap.QueueBound = 74
	snap.Classes = []Class{
		{Name: "web", Share: 3, QueueSize: 64, Queued: 2, Flows: 1, Submitted: 2},
		{Name: "batch", Share: 1, QueueSize: 10, Running: 2, Queued: 4, Flows: 1, Submitted: 6, Rejected: 1},
	}
	snap.Requests = []Request{
		{ID: "etl-1", Class: "batch", Flow: "etl", Since: testTime.Add(-1520 * time.Millisecond), Queued: 4, Running: 2, Place: 1},
		{ID: "page-a", Class: "web", Since: testTime.Add(-time.Second), Queued: 2},
	}
	return snap
}

// TestDebugPageJSON: the JSON of a snapshot, to the byte: its keys and
// their order, the requests' ages from Snapshot.Time, the distributions in
// seconds, and none of the page's own fields.
func TestDebugPageJSON(t *testing.T) {
	samples := []sample{
		{time.Millisecond, 10 * time.Millisecond, testTime.Add(-3 * time.Second)},
		{3 * time.Millisecond, 30 * time.Millisecond, testTime.Add(-2 * time.Second)},
		{2 * time.Millisecond, 20 * time.Millisecond, testTime.Add(-time.Second)},
	}
	got := serve(busySnapshot(), samples, http.MethodGet, "/debug/reqpool?format=json").Body.String()
	if got != busyJSON {
		t.Errorf("the JSON\n%s\nwant\n%s", got, busyJSON)
	}

	// No requests: [], not null; no queries: no since.
	var idle map[string]json.RawMessage
	if err := json.Unmarshal(serve(idleSnapshot(), nil, http.MethodGet, "/?format=json").Body.Bytes(), &idle); err != nil {
		t.Fatal(err)
	}
	if r, w := string(idle["requests"]), string(idle["window"]); r != "[]" || w != "{\n    \"queries\": 0\n  }" {
		t.Errorf("an idle pool's requests %s and window %s, want [] and no since", r, w)
	}
}

// TestDebugPageHTML: the classes table and the class and flow columns show
// when Snapshot.Classes is set, and only then; a request id is escaped,
// whatever it holds.
func TestDebugPageHTML(t *testing.T) {
	busy := serve(busySnapshot(), nil, http.MethodGet, "/").Body.String()
	for _, want := range []string{
		`<tr class="class"><td class="name">batch</td><td class="share">1</td><td class="running">2</td><td class="queued">4 <span class="muted">/ 10</span></td><td class="flows">1</td><td class="submitted">6</td><td class="completed">0</td><td class="failed">0</td><td class="cancelled">0</td><td class="dropped">0</td><td class="rejected">1</td></tr>`,
		`<tr class="request"><td class="place">1</td><td class="id">etl-1</td><td class="class">batch</td><td class="flow">etl</td><td class="age">1.52s</td><td class="queued">4</td><td class="running">2</td></tr>`,
		`<tr class="request"><td class="place">–</td><td class="id">page-a</td><td class="class">web</td><td class="flow">–</td><td class="age">1s</td><td class="queued">2</td><td class="running">0</td></tr>`,
		`<span class="muted" id="queue-bound">/ 74</span> <span class="muted" id="queue-parts">(web 64 + batch 10)</span>`,
	} {
		if !strings.Contains(busy, want) {
			t.Errorf("the page does not show\n%s\nin\n%s", want, busy)
		}
	}

	plain := busySnapshot()
	plain.Classes = nil
	page := serve(plain, nil, http.MethodGet, "/").Body.String()
	if strings.Contains(page, `class="card classes"`) || strings.Contains(page, `id="queue-parts"`) || strings.Contains(page, `<td class="class">`) {
		t.Errorf("a page without classes shows them:\n%s", page)
	}
	if want := `<tr class="request"><td class="place">1</td><td class="id">etl-1</td><td class="age">1.52s</td>`; !strings.Contains(page, want) {
		t.Errorf("the page does not show\n%s\nin\n%s", want, page)
	}

	hostile := idleSnapshot()
	hostile.Requests = []Request{{ID: `<img src=x onerror=alert(1)>"'&`, Since: testTime, Running: 1}}
	page = serve(hostile, nil, http.MethodGet, "/").Body.String()
	if strings.Contains(page, "<img") || !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt;&#34;&#39;&amp;") {
		t.Errorf("the hostile id is not escaped:\n%s", page)
	}
	if n := strings.Count(page, `<tr class="request">`); n != 1 {
		t.Errorf("%d request rows, want 1", n)
	}
}

// busyJSON is busySnapshot's JSON, with TestDebugPageJSON's samples.
const busyJSON = `{
  "time": "2026-11-25T15:20:31.5Z",
  "config": {
    "Workers": 2,
    "QueueSize": 64,
    "PerRequest": 0,
    "MaxFanout": 66,
    "RetryAfter": 1000000000,
    "DisableSQLComment": false,
    "Classes": [
      "web",
      "batch"
    ]
  },
  "stats": {
    "Workers": 2,
    "Running": 2,
    "Queued": 6,
    "Requests": 2,
    "Limit": 2,
    "LimitReason": "",
    "Submitted": 8,
    "Completed": 0,
    "Failed": 0,
    "Cancelled": 0,
    "Dropped": 0,
    "Rejected": 0
  },
  "requests": [
    {
      "id": "etl-1",
      "class": "batch",
      "flow": "etl",
      "age_seconds": 1.52,
      "queued": 4,
      "running": 2,
      "place": 1
    },
    {
      "id": "page-a",
      "class": "web",
      "flow": "",
      "age_seconds": 1,
      "queued": 2,
      "running": 0,
      "place": 0
    }
  ],
  "window": {
    "queries": 3,
    "since": "2026-11-25T15:20:28.5Z"
  },
  "queue_wait": {
    "p50_seconds": 0.002,
    "p90_seconds": 0.003,
    "p99_seconds": 0.003,
    "max_seconds": 0.003
  },
  "run_time": {
    "p50_seconds": 0.02,
    "p90_seconds": 0.03,
    "p99_seconds": 0.03,
    "max_seconds": 0.03
  }
}
`
