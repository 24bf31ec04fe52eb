//go:build unix

package reqpool

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The debug page is tested end to end: a real server runs a large request
// whose queries are held, and the page is read as JSON, then loaded in
// headless Chromium (a DOM dump and a screenshot). What needs no pool (the
// window, the charts, the methods, headers and rendering) is tested in
// internal/debugpage, on made-up snapshots.

// debugScene is a server with a pool, its debug page at /debug/reqpool and
// a fan-out at /fanout, on which the test holds requests.
type debugScene struct {
	pool    *Pool
	srv     string // the server's URL
	client  *http.Client
	release func()     // lets every held query return
	replies chan reply // of the held requests, once released
	held    int        // held requests sent
}

// newDebugScene starts the scene on a pool configured by cfg, with the
// page's history warmed by 24 small requests whose queries sleep 1–6 ms, 6
// at a time, in the first class.
func newDebugScene(t *testing.T, cfg Config) *debugScene {
	t.Helper()
	p := newPool(t, cfg)
	debug := p.DebugHandler() // before any query, so that the page sees them all
	hold := make(chan struct{})
	var once sync.Once
	held := Func(func(ctx context.Context) error {
		select {
		case <-hold:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/debug/reqpool", debug)
	// /fanout?n=N runs N held queries; with &sleep=D, N queries of D. With
	// &linger=1 the handler then waits for the held queries' release.
	mux.Handle("/fanout", Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.FormValue("n"))
		q := held
		if d, err := time.ParseDuration(r.FormValue("sleep")); err == nil {
			q = sleep(d)
		}
		if err := Fanout(r.Context(), repeat(n, q)...); err != nil {
			WriteError(w, r, err)
			return
		}
		if r.FormValue("linger") == "1" {
			<-hold
		}
	})))
	srv, client := serveHandler(t, mux)
	sc := &debugScene{pool: p, srv: srv.URL, client: client, replies: make(chan reply, 8),
		release: func() { once.Do(func() { close(hold) }) }}
	t.Cleanup(sc.release) // before the server closes, which waits for the handlers

	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i := range 24 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			url := fmt.Sprintf("%s/fanout?n=4&sleep=%dms", sc.srv, 1+i%6)
			if r := get(context.Background(), client, url); r.err != nil || r.status != http.StatusOK {
				t.Errorf("warm-up request: %d %v", r.status, r.err)
			}
		}()
	}
	wg.Wait()
	return sc
}

// classifyForm is a Config.Classify that takes the class and flow from the
// request's class and flow parameters.
func classifyForm(r *http.Request) (class, flow string) {
	return r.FormValue("class"), r.FormValue("flow")
}

// hold sends a request with id for the held queries that query (n=N, and
// so on) asks of /fanout, and waits until the pool's gauges reach running,
// queued and requests.
func (sc *debugScene) hold(t *testing.T, id, query string, running, queued, requests int) {
	t.Helper()
	sc.held++
	go func() {
		sc.replies <- get(context.Background(), sc.client, sc.srv+"/fanout?"+query, RequestIDHeader, id)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := sc.pool.Stats()
		if st.Running == running && st.Queued == queued && st.Requests == requests {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after sending %s: %+v, want %d running, %d queued and %d requests", id, st, running, queued, requests)
		}
		time.Sleep(time.Millisecond)
	}
}

// finish releases the held queries and checks that every held request
// succeeded.
func (sc *debugScene) finish(t *testing.T) {
	t.Helper()
	sc.release()
	for range sc.held {
		if r := <-sc.replies; r.err != nil || r.status != http.StatusOK {
			t.Errorf("held request %s: %d %v", r.id, r.status, r.err)
		}
	}
	sc.held = 0
}

// debugJSON is the page's JSON, as a client decodes it.
type debugJSON struct {
	Time     time.Time `json:"time"`
	Config   Config    `json:"config"`
	Stats    Stats     `json:"stats"`
	Requests []struct {
		ID      string  `json:"id"`
		Class   string  `json:"class"`
		Flow    string  `json:"flow"`
		Age     float64 `json:"age_seconds"`
		Queued  int     `json:"queued"`
		Running int     `json:"running"`
		Place   int     `json:"place"`
	} `json:"requests"`
	Window struct {
		Queries int       `json:"queries"`
		Since   time.Time `json:"since"`
	} `json:"window"`
	QueueWait debugDistJSON `json:"queue_wait"`
	RunTime   debugDistJSON `json:"run_time"`
}

// debugDistJSON is one distribution in the page's JSON.
type debugDistJSON struct {
	P50 float64 `json:"p50_seconds"`
	P90 float64 `json:"p90_seconds"`
	P99 float64 `json:"p99_seconds"`
	Max float64 `json:"max_seconds"`
}

// ordered reports whether the percentiles are in order, within [min, max).
func (d debugDistJSON) ordered(min, max float64) bool {
	return min <= d.P50 && d.P50 <= d.P90 && d.P90 <= d.P99 && d.P99 <= d.Max && d.Max < max
}

// readJSON GETs the page's JSON, checks its headers and returns it decoded,
// with the raw object for checking its field names.
func (sc *debugScene) readJSON(t *testing.T) (debugJSON, map[string]json.RawMessage) {
	t.Helper()
	r := get(context.Background(), sc.client, sc.srv+"/debug/reqpool?format=json")
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("GET ?format=json: %d %v %s", r.status, r.err, r.body)
	}
	var v debugJSON
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
	if err := json.Unmarshal([]byte(r.body), &raw); err != nil {
		t.Fatal(err)
	}
	return v, raw
}

func TestDebugHandlerLive(t *testing.T) {
	sc := newDebugScene(t, Config{Workers: 4, QueueSize: 64, MaxFanout: 64})
	// A request that has fanned out and lingers, with nothing queued or
	// running; a large request that takes the 4 workers and queues 36; two
	// small ones that queue behind it and go first (fewest remaining first).
	sc.hold(t, "session-idle", "n=1&sleep=1ms&linger=1", 0, 0, 1)
	sc.hold(t, "report-large", "n=40", 4, 36, 2)
	sc.hold(t, "dash-a", "n=3", 4, 39, 3)
	sc.hold(t, "dash-b", "n=5", 4, 44, 4)

	t.Run("json", func(t *testing.T) {
		v, raw := sc.readJSON(t)
		for _, k := range []string{"time", "config", "stats", "requests", "window", "queue_wait", "run_time"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("the JSON has no %q", k)
			}
		}
		want := Stats{Workers: 4, Limit: 4, Running: 4, Queued: 44, Requests: 4, Submitted: 24*4 + 1 + 48, Completed: 24*4 + 1,
			Classes: []ClassStats{{Running: 4, Queued: 44, Submitted: 24*4 + 1 + 48, Completed: 24*4 + 1}}}
		if !reflect.DeepEqual(v.Stats, want) {
			t.Errorf("stats %+v, want %+v", v.Stats, want)
		}
		if !reflect.DeepEqual(v.Config, sc.pool.Config()) {
			t.Errorf("config %+v, want %+v", v.Config, sc.pool.Config())
		}
		type row struct {
			id                     string
			queued, running, place int
		}
		var got []row
		for _, r := range v.Requests {
			got = append(got, row{r.ID, r.Queued, r.Running, r.Place})
			if r.Age <= 0 || r.Age > 60 {
				t.Errorf("request %s: age %v s", r.ID, r.Age)
			}
			if r.Class != "" || r.Flow != "" {
				t.Errorf("request %s: class %q, flow %q in a pool without classes or flows", r.ID, r.Class, r.Flow)
			}
		}
		wantRows := []row{{"dash-a", 3, 0, 1}, {"dash-b", 5, 0, 2}, {"report-large", 36, 4, 3}, {"session-idle", 0, 0, 0}}
		if !slices.Equal(got, wantRows) {
			t.Errorf("requests %+v, want %+v", got, wantRows)
		}
		if v.Window.Queries != 24*4+1 || v.Window.Since.IsZero() || v.Window.Since.After(v.Time) {
			t.Errorf("window %+v at %v, want the 97 queries that ran", v.Window, v.Time)
		}
		// The warm-up's queries sleep 1–6 ms each, and 6 requests of 4
		// queries on 4 workers wait.
		if !v.RunTime.ordered(0.001, 1) {
			t.Errorf("run_time %+v", v.RunTime)
		}
		if !v.QueueWait.ordered(0, 1) || v.QueueWait.Max == 0 {
			t.Errorf("queue_wait %+v", v.QueueWait)
		}
		checkKeys(t, "stats", raw["stats"], goNames(Stats{}))
		checkKeys(t, "config", raw["config"], goNames(Config{}))
		var reqs []json.RawMessage
		json.Unmarshal(raw["requests"], &reqs)
		checkKeys(t, "requests[0]", reqs[0], []string{"id", "class", "flow", "age_seconds", "queued", "running", "place"})
		checkKeys(t, "run_time", raw["run_time"], []string{"p50_seconds", "p90_seconds", "p99_seconds", "max_seconds"})
	})

	t.Run("chromium", func(t *testing.T) {
		bin := chromium(t)
		url := sc.srv + "/debug/reqpool"
		dom := string(runChromium(t, bin, "--dump-dom", url))
		// Exactly the columns of a pool without classes or flows: no class
		// or flow, and no classes table.
		checkRows(t, "request", tableRows(dom, "request", "id"), []map[string]string{
			{"place": "3", "id": "report-large", "age": "", "queued": "36", "running": "4"},
			{"place": "1", "id": "dash-a", "age": "", "queued": "3", "running": "0"},
			{"place": "–", "id": "session-idle", "age": "", "queued": "0", "running": "0"},
		})
		if strings.Contains(dom, `class="card classes"`) {
			t.Errorf("the page of a pool without classes or flows shows a classes table")
		}
		checkElements(t, dom, map[string]string{"stat-running": "4", "stat-queued": "44", "queue-bound": "/ 64",
			"stat-requests": "4", "config-workers": "4"})
		if n := strings.Count(dom, `<rect class="bar"`); n == 0 {
			t.Errorf("the page has no histogram bars")
		}
		if !strings.Contains(dom, `http-equiv="refresh"`) {
			t.Errorf("the page does not refresh itself")
		}
		if t.Failed() {
			t.Logf("the DOM:\n%s", dom)
		}

		shot := filepath.Join(t.TempDir(), "debug-page.png")
		runChromium(t, bin, "--screenshot="+shot, "--window-size=1200,900", "--hide-scrollbars", url)
		checkScreenshot(t, shot, 1200, 900)
		// docs/debug-page.png, a pool with classes and flows, is the example
		// app's: examples/dashboard's TestReportFlood takes it.
	})

	sc.finish(t)
	v, _ := sc.readJSON(t)
	if len(v.Requests) != 0 || v.Stats.Requests != 0 || v.Stats.Running != 0 || v.Stats.Queued != 0 {
		t.Errorf("after the held requests: %+v, requests %+v", v.Stats, v.Requests)
	}
}

// classedRow is a live request as the tests of classes and flows check it.
type classedRow struct {
	id, class, flow        string
	queued, running, place int
}

// TestDebugHandlerClasses: a pool of two classes, with named flows and
// flowless requests in each, shows each request's class, flow and place in
// its flow, and each class's figures, in the JSON and on the page.
func TestDebugHandlerClasses(t *testing.T) {
	sc := newDebugScene(t, Config{Workers: 2, QueueSize: 64, Classify: classifyForm,
		Classes: []Class{{Name: "web", Share: 3}, {Name: "batch", QueueSize: 10}}})
	// A lingering web request in flow tenant-y; a batch request of flow
	// etl that takes both workers and queues 4, and behind it another of
	// etl and one of ml; a batch request that does not fit the batch queue
	// (10), refused; in web, a request of flow tenant-x, then two flowless
	// ones, one of them classed by default ("" is the first class).
	sc.hold(t, "session-y", "class=web&flow=tenant-y&n=1&sleep=1ms&linger=1", 0, 0, 1)
	sc.hold(t, "etl-1", "class=batch&flow=etl&n=6", 2, 4, 2)
	sc.hold(t, "etl-2", "class=batch&flow=etl&n=2", 2, 6, 3)
	sc.hold(t, "ml-1", "class=batch&flow=ml&n=3", 2, 9, 4)
	if r := get(context.Background(), sc.client, sc.srv+"/fanout?class=batch&flow=etl&n=2"); r.status != http.StatusServiceUnavailable {
		t.Errorf("a batch Fanout past the batch queue: %d %v, want 503", r.status, r.err)
	}
	sc.hold(t, "x-1", "class=web&flow=tenant-x&n=4", 2, 13, 5)
	sc.hold(t, "page-a", "class=web&n=2", 2, 15, 6)
	sc.hold(t, "page-b", "n=1", 2, 16, 7)

	// In web, tenant-x and the flowless requests have none executing and
	// became ready at the same turn: tenant-x, ready first, is the class's
	// next. In batch, ml has none executing and goes before etl, which has
	// 2. Within a flow, fewest remaining first.
	wantRows := []classedRow{
		{"x-1", "web", "tenant-x", 4, 0, 1},
		{"page-b", "web", "", 1, 0, 1},
		{"page-a", "web", "", 2, 0, 2},
		{"ml-1", "batch", "ml", 3, 0, 1},
		{"etl-2", "batch", "etl", 2, 0, 1},
		{"etl-1", "batch", "etl", 4, 2, 2},
		{"session-y", "web", "tenant-y", 0, 0, 0},
	}
	const warm = 24 * 4 // the warm-up's queries, in web
	wantStats := Stats{Workers: 2, Limit: 2, Running: 2, Queued: 16, Requests: 7, Submitted: warm + 1 + 7 + 11, Completed: warm + 1, Rejected: 1,
		Classes: []ClassStats{
			{Name: "web", Queued: 7, Flows: 2, Submitted: warm + 1 + 7, Completed: warm + 1},
			{Name: "batch", Running: 2, Queued: 9, Flows: 2, Submitted: 11, Rejected: 1},
		}}

	t.Run("json", func(t *testing.T) {
		v, _ := sc.readJSON(t)
		if !reflect.DeepEqual(v.Stats, wantStats) {
			t.Errorf("stats %+v, want %+v", v.Stats, wantStats)
		}
		if !reflect.DeepEqual(v.Config.Classes, sc.pool.Config().Classes) || v.Config.Classes[0].Share != 3 {
			t.Errorf("config.Classes %+v, want %+v", v.Config.Classes, sc.pool.Config().Classes)
		}
		var got []classedRow
		for _, r := range v.Requests {
			got = append(got, classedRow{r.ID, r.Class, r.Flow, r.Queued, r.Running, r.Place})
		}
		if !slices.Equal(got, wantRows) {
			t.Errorf("requests\n%+v, want\n%+v", got, wantRows)
		}
	})

	t.Run("chromium", func(t *testing.T) {
		bin := chromium(t)
		dom := string(runChromium(t, bin, "--dump-dom", sc.srv+"/debug/reqpool"))
		checkRows(t, "class", tableRows(dom, "class", "name"), []map[string]string{
			{"name": "web", "share": "3", "running": "0", "queued": "7 / 64", "flows": "2",
				"submitted": strconv.Itoa(warm + 8), "completed": strconv.Itoa(warm + 1), "failed": "0", "cancelled": "0", "dropped": "0", "rejected": "0"},
			{"name": "batch", "share": "1", "running": "2", "queued": "9 / 10", "flows": "2",
				"submitted": "11", "completed": "0", "failed": "0", "cancelled": "0", "dropped": "0", "rejected": "1"},
		})
		var want []map[string]string
		for _, r := range wantRows {
			place := "–"
			if r.place > 0 {
				place = strconv.Itoa(r.place)
			}
			want = append(want, map[string]string{"id": r.id, "class": r.class, "flow": cmp.Or(r.flow, "–"), "age": "",
				"queued": strconv.Itoa(r.queued), "running": strconv.Itoa(r.running), "place": place})
		}
		checkRows(t, "request", tableRows(dom, "request", "id"), want)
		checkElements(t, dom, map[string]string{"stat-running": "2", "stat-queued": "16", "queue-bound": "/ 74",
			"queue-parts": "(web 64 + batch 10)", "stat-requests": "7"})
		if t.Failed() {
			t.Logf("the DOM:\n%s", dom)
		}
	})

	sc.finish(t)
}

// TestDebugHandler: one page per pool, with one Observer, and what it shows
// of an idle pool. The page's methods, formats, headers and rendering are
// tested in internal/debugpage, on made-up snapshots.
func TestDebugHandler(t *testing.T) {
	p := newPool(t, Config{Workers: 1})
	h := p.DebugHandler()
	if p.DebugHandler() != h {
		t.Error("a second DebugHandler call returned another handler")
	}
	if n := len(*p.observers.Load()); n != 1 {
		t.Errorf("%d observers attached, want the page's one", n)
	}

	// An idle pool: nothing to list, no history.
	w := serveDebug(h, "/debug/reqpool")
	for _, want := range []string{"No live request has fanned out.", "No query has run since the page was first served."} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("the idle page does not say %q", want)
		}
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(serveDebug(h, "/debug/reqpool?format=json").Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	if got := string(raw["requests"]); got != "[]" {
		t.Errorf("requests of an idle pool: %s, want []", got)
	}
	checkKeys(t, "window", raw["window"], []string{"queries"}) // no since without queries
}

// TestDebugHandlerEscapes: a live request's id that Middleware would never
// pass is escaped all the same, and given as it is in the JSON.
func TestDebugHandlerEscapes(t *testing.T) {
	p := newPool(t, Config{Workers: 1})
	h := p.DebugHandler()
	hostile := `<img src=x onerror=alert(1)>"'&`
	ctx, release := p.newContext(context.Background(), hostile)
	defer release()
	hold, running := make(chan struct{}), make(chan struct{})
	stop := sync.OnceFunc(func() { close(hold) })
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- Fanout(ctx, Func(func(context.Context) error { close(running); <-hold; return nil }))
	}()
	<-running
	page := serveDebug(h, "/debug/reqpool").Body.String()
	if strings.Contains(page, "<img") || !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt;&#34;&#39;&amp;") {
		t.Errorf("the hostile id is not escaped:\n%s", page)
	}
	var v debugJSON
	if err := json.Unmarshal(serveDebug(h, "/debug/reqpool?format=json").Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Requests) != 1 || v.Requests[0].ID != hostile || v.Requests[0].Running != 1 {
		t.Errorf("JSON requests %+v, want the hostile id, running 1", v.Requests)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// serveDebug has h serve a GET of target from a loopback client.
func serveDebug(h http.Handler, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = "127.0.0.1:40000" // NewRequest's is 192.0.2.1, which gets 403 (TestDebugHandlerLoopbackOnly)
	h.ServeHTTP(w, r)
	return w
}

// TestDebugObserver: the page's Observer adds to its window the queries
// that ran, with their wait, run time and end, and neither the dropped ones
// nor refusals.
func TestDebugObserver(t *testing.T) {
	p := newPool(t, Config{})
	h := p.DebugHandler()
	o := debugObserver{p.debugPage().page.Window()}
	at := time.Date(2026, 11, 25, 15, 20, 31, 0, time.UTC)
	ctx := context.Background()
	o.QueryDone(ctx, QueryRecord{Admitted: at, Started: at.Add(3 * time.Millisecond), Finished: at.Add(8 * time.Millisecond)})
	o.QueryDone(ctx, QueryRecord{Admitted: at, Finished: at.Add(time.Second), Outcome: OutcomeDropped}) // not kept
	o.Refused(ctx, Refusal{Queries: 4, Reason: RefusedQueueFull})
	var v debugJSON
	if err := json.Unmarshal(serveDebug(h, "/debug/reqpool?format=json").Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Window.Queries != 1 || !v.Window.Since.Equal(at.Add(8*time.Millisecond)) {
		t.Errorf("window %+v, want the one query that ran, ended at %v", v.Window, at.Add(8*time.Millisecond))
	}
	if v.QueueWait.Max != 0.003 || v.RunTime.Max != 0.005 {
		t.Errorf("queue_wait %+v, run_time %+v: want the query's 3 ms and 5 ms", v.QueueWait, v.RunTime)
	}
}

// goNames returns the names of v's fields that encoding/json encodes.
func goNames(v any) []string {
	var names []string
	for _, f := range reflect.VisibleFields(reflect.TypeOf(v)) {
		if f.Tag.Get("json") != "-" {
			names = append(names, f.Name)
		}
	}
	return names
}

// checkKeys checks that the JSON object obj has exactly the keys want.
func checkKeys(t *testing.T, what string, obj json.RawMessage, want []string) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	got := slices.Sorted(maps.Keys(m))
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s has the keys %q, want %q", what, got, want)
	}
}

// tableRows returns the text of the cells of the page's rows of class
// rowClass, each by its cell's class, keyed by the text of its cell of
// class key.
func tableRows(dom, rowClass, key string) map[string]map[string]string {
	rows := map[string]map[string]string{}
	cell := regexp.MustCompile(`<td class="(\w+)">(.*?)</td>`)
	tag := regexp.MustCompile(`<[^>]*>`)
	for _, m := range regexp.MustCompile(`<tr class="`+rowClass+`">(.*?)</tr>`).FindAllStringSubmatch(dom, -1) {
		cells := map[string]string{}
		for _, c := range cell.FindAllStringSubmatch(m[1], -1) {
			cells[c[1]] = strings.TrimSpace(tag.ReplaceAllString(c[2], ""))
		}
		rows[cells[key]] = cells
	}
	return rows
}

// checkRows checks that rows (from tableRows) has a row for each of want,
// found by its "id" or "name" cell, with exactly want's cells and their
// text; a cell wanted as "" is one whose text varies (an age), and must
// only not be empty.
func checkRows(t *testing.T, what string, rows map[string]map[string]string, want []map[string]string) {
	t.Helper()
	for _, w := range want {
		var key string
		for _, k := range []string{"id", "name"} {
			if w[k] != "" {
				key = w[k]
			}
		}
		got, ok := rows[key]
		if !ok {
			t.Errorf("the page has no %s row %s", what, key)
			continue
		}
		if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(w))) {
			t.Errorf("the page's %s row %s has the cells %q, want %q", what, key, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(w)))
		}
		for k, v := range w {
			if got[k] != v && (v != "" || got[k] == "") {
				t.Errorf("the page's %s row %s: %s is %q, want %q (row %v)", what, key, k, got[k], v, got)
			}
		}
	}
}

// checkElements checks the text of the page's elements, by id.
func checkElements(t *testing.T, dom string, want map[string]string) {
	t.Helper()
	for id, w := range want {
		if got := elementText(dom, id); got != w {
			t.Errorf("the page's #%s shows %q, want %q", id, got, w)
		}
	}
}

// elementText returns the text of the element with the given id, when it
// holds text alone.
func elementText(dom, id string) string {
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`).FindStringSubmatch(dom)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// checkScreenshot checks that path is a PNG of width × height that shows
// more than one colour.
func checkScreenshot(t *testing.T, path string, width, height int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if b := img.Bounds(); b != image.Rect(0, 0, width, height) {
		t.Errorf("screenshot of %v, want %dx%d", b, width, height)
	}
	colours := map[[4]uint32]bool{}
	for y := 0; y < height; y += 7 {
		for x := 0; x < width; x += 7 {
			r, g, b, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, b, a}] = true
		}
	}
	if len(colours) < 3 {
		t.Errorf("the screenshot shows %d colours: a blank page?", len(colours))
	}
}

// chromiumTimeout bounds each Chromium run.
const chromiumTimeout = 60 * time.Second

// chromium returns the Chromium to run: $CHROMIUM, or /usr/bin/chromium
// (Debian's chromium package, which `make test` installs as root with
// scripts/ensure-packages.sh). Without it the test is skipped, except
// under CI=true, where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CHROMIUM")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	path, err := exec.LookPath(bin)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("Chromium not found (%v) and CI=true: the browser test must run (make test installs it; or set CHROMIUM)", err)
	}
	t.Skipf("Chromium not found (%v): skipping the browser test (make test installs it as root; or set CHROMIUM)", err)
	return ""
}

// runChromium runs headless Chromium with args after its usual flags, and
// returns what it wrote to its standard output. It runs with a profile and
// a HOME of its own in a new temporary folder, never reaches beyond
// loopback (no proxy, no background networking), and is killed after
// chromiumTimeout.
//
// No process of it outlives the call: its process group is killed once it
// exits, and so is any process that names its folder in its command line
// or environment, as its crash handlers do (they start sessions of their
// own).
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	ctx, cancel := context.WithTimeout(context.Background(), chromiumTimeout)
	defer cancel()
	flags := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-proxy-server", "--user-data-dir=" + filepath.Join(dir, "profile"),
	}
	cmd := exec.CommandContext(ctx, bin, append(flags, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	// Files, not pipes: then Wait does not wait for whichever child keeps
	// its standard output open.
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	runErr := cmd.Run()
	if cmd.Process != nil {
		reapChromium(t, cmd.Process.Pid, dir)
	}
	if runErr != nil {
		msg, _ := os.ReadFile(stderr.Name())
		t.Fatalf("%s %s: %v after %v; its standard error ends:\n%s", bin, strings.Join(args, " "), runErr,
			time.Since(start).Round(time.Millisecond), lastLines(msg, 20))
	}
	out, err := os.ReadFile(stdout.Name())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// reapChromium kills process group pgid and every process that names dir
// (see processesNaming), until none is left; it fails the test if some are
// still there after 5 s.
func reapChromium(t *testing.T, pgid int, dir string) {
	t.Helper()
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Errorf("killing Chromium's process group: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := processesNaming(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("Chromium processes left behind: %v", left)
			return
		}
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processesNaming returns the processes whose command line or environment
// contains s, from /proc: runChromium's folder is in the HOME that every
// process Chromium starts inherits. It returns none where there is no /proc.
func processesNaming(s string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		for _, f := range []string{"cmdline", "environ"} {
			if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), f)); err == nil && bytes.Contains(b, []byte(s)) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// TestDebugHandlerLoopbackOnly: a real client from a non-loopback address
// of this machine gets 403 from DebugHandler, and the page from
// DebugHandlerFor with a check that lets it in; a loopback client gets the
// page.
func TestDebugHandlerLoopbackOnly(t *testing.T) {
	var ip net.IP
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			ip = n.IP
			break
		}
	}
	if ip == nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no non-loopback IPv4 address on this machine, and CI=true")
		}
		t.Skip("no non-loopback IPv4 address on this machine")
	}
	p := newPool(t, Config{})
	mux := http.NewServeMux()
	mux.Handle("/default", p.DebugHandler())
	mux.Handle("/allowed", p.DebugHandlerFor(func(r *http.Request) bool { return r.Header.Get("X-Operator") == "yes" }))
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	loop := httptest.NewServer(mux)
	defer loop.Close()
	// Dial from the non-loopback address too: a connection to it is
	// otherwise free to come from any of the machine's addresses.
	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext}}
	defer c.CloseIdleConnections()
	for _, tc := range []struct {
		base, path, operator string
		want                 int
	}{
		{srv.URL, "/default", "", http.StatusForbidden},
		{srv.URL, "/default", "yes", http.StatusForbidden},
		{srv.URL, "/allowed", "", http.StatusForbidden},
		{srv.URL, "/allowed", "yes", http.StatusOK},
		{loop.URL, "/default", "", http.StatusOK},
	} {
		cl := c
		if tc.base == loop.URL {
			cl = loop.Client()
		}
		req, _ := http.NewRequest(http.MethodGet, tc.base+tc.path+"?format=json", nil)
		req.Header.Set("X-Operator", tc.operator)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s%s (operator %q): %d, want %d: %s", tc.base, tc.path, tc.operator, resp.StatusCode, tc.want, body)
		}
		if tc.want == http.StatusForbidden && strings.Contains(string(body), "stats") {
			t.Errorf("a 403 shows the page: %s", body)
		}
	}
}
