package main

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
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/examples/dashboard/store"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind: a handler, a
// query, a lib/pq cancel request, a client or server connection.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testOptions are the pool the tests run the app with: small, so that the
// concurrency test queues, yet wide enough for the report's 4 queries; with
// the app's classes, their default shares and a report queue of 2 reports,
// and with Server-Timing, as main has them by default.
var testOptions = poolOptions{Workers: 4, ServerTiming: true, Classes: true,
	InteractiveShare: defaultInteractiveShare, ReportShare: defaultReportShare, ReportQueue: 2 * reportQueries}

var (
	schemaOnce sync.Once
	schemaErr  error
)

// testDB opens a database handle on $DATABASE_URL for pool, closed when the test
// ends, and loads the schema the first time. Without DATABASE_URL the test
// is skipped, except in CI (CI=true), where skipping would hide that nothing
// was tested.
func testDB(t *testing.T, pool *reqpool.Pool) *sqlx.DB {
	t.Helper()
	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		const how = "run the tests with ../../scripts/with-postgres.sh, or set DATABASE_URL to a PostgreSQL database"
		if os.Getenv("CI") == "true" {
			t.Fatal("DATABASE_URL is not set, and CI=true: the PostgreSQL tests must not be skipped in CI; " + how)
		}
		t.Skip("DATABASE_URL is not set: " + how)
	}
	db, err := store.Open(t.Context(), dsn, pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	schemaOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), schemaTimeout)
		defer cancel()
		start := time.Now()
		var loaded bool
		if loaded, schemaErr = store.Ensure(ctx, db, false); loaded && schemaErr == nil {
			t.Logf("schema and seed loaded in %v", time.Since(start).Round(time.Millisecond))
		}
	})
	if schemaErr != nil {
		t.Fatalf("load schema: %v", schemaErr)
	}
	return db
}

// monitorDB returns a database handle of the test's own, for watching the
// server beside the app's connections.
func monitorDB(t *testing.T) *sqlx.DB {
	pool, err := reqpool.New(reqpool.Config{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Shutdown(context.Background()) })
	return testDB(t, pool)
}

// startApp serves a new app with testOptions, on its own database handle,
// with httptest. When the test ends, the server is closed (which waits for
// its handlers), the pool shut down and checked idle, and the database
// handle closed.
func startApp(t *testing.T) (*app, *httptest.Server) {
	t.Helper()
	return startAppWith(t, testOptions, nil)
}

// startTracedApp is startApp with tp as newApp's TracerProvider: nil for no
// tracing.
func startTracedApp(t *testing.T, tp trace.TracerProvider) (*app, *httptest.Server) {
	t.Helper()
	return startAppWith(t, testOptions, tp)
}

// startAppWith is startApp with the pool of o, and tp as newApp's
// TracerProvider (nil for no tracing).
func startAppWith(t *testing.T, o poolOptions, tp trace.TracerProvider) (*app, *httptest.Server) {
	t.Helper()
	pool, err := newPool(o)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(testDB(t, pool), pool, slog.New(slog.NewTextHandler(t.Output(), nil)), tp)
	if err != nil {
		pool.Shutdown(context.Background())
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		srv.Close() // also closes the idle connections of srv.Client()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("pool shutdown: %v", err)
		}
		if s := a.pool.Stats(); s.Running != 0 || s.Queued != 0 || s.Requests != 0 {
			t.Errorf("pool not idle after shutdown: %+v", s)
		}
	})
	return a, srv
}

// get sends GET path to srv, with X-Request-ID id unless id is empty, and
// returns the response and its body.
func get(t *testing.T, srv *httptest.Server, path, id string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := fetch(t.Context(), srv, path, id)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// fetch is get for any goroutine: it returns its errors rather than failing
// the test.
func fetch(ctx context.Context, srv *httptest.Server, path, id string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		return nil, nil, err
	}
	if id != "" {
		req.Header.Set(reqpool.RequestIDHeader, id)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: read body: %w", path, err)
	}
	return resp, body, nil
}

// getJSON is get that expects 200 and decodes the JSON body into v.
func getJSON(t *testing.T, srv *httptest.Server, path, id string, v any) *http.Response {
	t.Helper()
	resp, body := get(t, srv, path, id)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q, want application/json", path, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: decode %s: %v", path, body, err)
	}
	return resp
}

func TestDashboard(t *testing.T) {
	_, srv := startApp(t)

	var d store.Dashboard
	resp := getJSON(t, srv, "/orgs/1/dashboard", "test-dashboard-1", &d)
	if got := resp.Header.Get(reqpool.RequestIDHeader); got != "test-dashboard-1" {
		t.Errorf("X-Request-ID = %q, want the request's test-dashboard-1", got)
	}
	if d.Org.ID != 1 || d.Org.Name == "" || d.Org.CreatedAt.IsZero() {
		t.Errorf("org = %+v, want org 1 with a name and a creation time", d.Org)
	}
	if d.Users <= 0 {
		t.Errorf("users = %d, want > 0", d.Users)
	}
	if d.OpenOrders.Count <= 0 || d.OpenOrders.AmountCents <= 0 {
		t.Errorf("open orders = %+v, want some", d.OpenOrders)
	}
	if len(d.Revenue) != 6 {
		t.Errorf("revenue has %d months, want 6: %+v", len(d.Revenue), d.Revenue)
	}
	if !slices.IsSortedFunc(d.Revenue, func(a, b store.MonthRevenue) int { return strings.Compare(a.Month, b.Month) }) {
		t.Errorf("revenue months not in order: %+v", d.Revenue)
	}
	if len(d.RecentEvents) != 10 {
		t.Errorf("%d recent events, want 10", len(d.RecentEvents))
	}
	if !slices.IsSortedFunc(d.RecentEvents, func(a, b store.Event) int { return b.CreatedAt.Compare(a.CreatedAt) }) {
		t.Errorf("recent events not newest first: %+v", d.RecentEvents)
	}

	// Latency, for the record: sequential requests on a warm cache.
	const n = 50
	lat := make([]time.Duration, n)
	for i := range lat {
		start := time.Now()
		getJSON(t, srv, "/orgs/1/dashboard", "", &d)
		lat[i] = time.Since(start)
	}
	slices.Sort(lat)
	t.Logf("dashboard of org 1, %d sequential requests: p50 %v, p90 %v, max %v",
		n, lat[n/2].Round(10*time.Microsecond), lat[n*9/10].Round(10*time.Microsecond), lat[n-1].Round(10*time.Microsecond))
}

func TestDashboardErrors(t *testing.T) {
	_, srv := startApp(t)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/orgs/999999/dashboard", http.StatusNotFound},
		{"/orgs/abc/dashboard", http.StatusBadRequest},
		{"/orgs/0/dashboard", http.StatusBadRequest},
		{"/orgs/-1/dashboard", http.StatusBadRequest},
		{"/orgs/99999999999999999999/dashboard", http.StatusBadRequest}, // overflows int64
	} {
		resp, body := get(t, srv, tc.path, "")
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s: %s (%s), want %d", tc.path, resp.Status, strings.TrimSpace(string(body)), tc.want)
		}
		// Middleware gives every request an id, even one without the header.
		if resp.Header.Get(reqpool.RequestIDHeader) == "" {
			t.Errorf("GET %s: no X-Request-ID in the response", tc.path)
		}
	}
}

func TestReport(t *testing.T) {
	_, srv := startApp(t)

	var rep report
	getJSON(t, srv, "/orgs/1/report?sleep=0", "", &rep)
	if rep.OrgID != 1 || rep.SleepSeconds != 0 {
		t.Errorf("org %d, sleep %v; want 1, 0", rep.OrgID, rep.SleepSeconds)
	}
	if len(rep.OrdersByState) != 4 {
		t.Errorf("orders in %d states, want 4: %+v", len(rep.OrdersByState), rep.OrdersByState)
	}
	if len(rep.TopCustomers) != 5 || len(rep.EventsByKind) == 0 || rep.ActiveUsers <= 0 {
		t.Errorf("implausible report: %+v", rep)
	}

	for _, q := range []string{"sleep=-1", "sleep=abc", "sleep=NaN", "timeout=-1", "timeout=x"} {
		path := "/orgs/1/report?" + q
		if resp, body := get(t, srv, path, ""); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %s (%s), want 400", path, resp.Status, strings.TrimSpace(string(body)))
		}
	}
}

// TestReportCancelledWhenClientHangsUp hangs up on a slow report once its
// 4 queries run in PostgreSQL, and expects them gone within 500 ms.
func TestReportCancelledWhenClientHangsUp(t *testing.T) {
	_, srv := startApp(t)
	monitor := monitorDB(t) // the app's connections are the app's
	id := fmt.Sprintf("test-hangup-%d", time.Now().UnixNano())

	ctx, hangUp := context.WithCancel(t.Context())
	defer hangUp()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/orgs/1/report?sleep=30", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(reqpool.RequestIDHeader, id)
	done := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("got an answer: %s", resp.Status)
		}
		done <- err
	}()

	took := waitQueries(t, monitor, id, 5*time.Second, func(n int) bool { return n == 4 })
	t.Logf("4 queries running in PostgreSQL %v after the request was sent", took.Round(time.Millisecond))
	hangUp()
	took = waitQueries(t, monitor, id, 500*time.Millisecond, func(n int) bool { return n == 0 })
	t.Logf("queries gone from pg_stat_activity %v after the hang-up", took.Round(time.Millisecond))

	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("client: %v, want context.Canceled", err)
	}
}

// TestReportTimeout asks for a report with a deadline shorter than its
// queries: 504, and the queries gone.
func TestReportTimeout(t *testing.T) {
	_, srv := startApp(t)
	monitor := monitorDB(t)
	id := fmt.Sprintf("test-timeout-%d", time.Now().UnixNano())

	start := time.Now()
	resp, body := get(t, srv, "/orgs/1/report?sleep=30&timeout=0.3", id)
	took := time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("%s (%s), want 504", resp.Status, strings.TrimSpace(string(body)))
	}
	if took > 2*time.Second {
		t.Errorf("answered after %v, want about 300 ms", took)
	}
	gone := waitQueries(t, monitor, id, 500*time.Millisecond, func(n int) bool { return n == 0 })
	t.Logf("504 after %v; queries gone %v later", took.Round(time.Millisecond), gone.Round(time.Millisecond))
}

// TestShutdownCancelsReport shuts the app down with a short deadline while
// a report runs: its queries are cancelled and its client, still there, gets
// 503 rather than nothing.
func TestShutdownCancelsReport(t *testing.T) {
	a, srv := startApp(t)
	monitor := monitorDB(t)
	id := fmt.Sprintf("test-shutdown-%d", time.Now().UnixNano())

	type answer struct {
		resp *http.Response
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, _, err := fetch(t.Context(), srv, "/orgs/1/report?sleep=30", id)
		done <- answer{resp, err}
	}()
	waitQueries(t, monitor, id, 5*time.Second, func(n int) bool { return n == 4 })

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := a.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want context.DeadlineExceeded", err)
	}
	t.Logf("Shutdown returned after %v", time.Since(start).Round(time.Millisecond))
	waitQueries(t, monitor, id, 500*time.Millisecond, func(n int) bool { return n == 0 })

	ans := <-done
	if ans.err != nil {
		t.Fatal(ans.err)
	}
	if ans.resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("report cut off by shutdown: %s, want 503", ans.resp.Status)
	}
}

// TestConcurrentDashboards runs more dashboards at once than the pool has
// workers: all succeed, and since the connection pool is as large as the
// worker pool, no query ever waits for a connection.
func TestConcurrentDashboards(t *testing.T) {
	_, srv := startApp(t)
	const n = 24
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			path := fmt.Sprintf("/orgs/%d/dashboard", 1+i%50)
			resp, body, err := fetch(t.Context(), srv, path, "")
			switch {
			case err != nil:
				errs[i] = err
			case resp.StatusCode != http.StatusOK:
				errs[i] = fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
			default:
				var d store.Dashboard
				if err := json.Unmarshal(body, &d); err != nil || d.Users <= 0 {
					errs[i] = fmt.Errorf("GET %s: %s: users %d, %v", path, body, d.Users, err)
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	var s stats
	getJSON(t, srv, "/stats", "", &s)
	if s.Pool.Workers != testOptions.Workers || s.DB.MaxOpen != testOptions.Workers+reqpool.SpareConns {
		t.Errorf("workers %d, max open connections %d; want %d and %d", s.Pool.Workers, s.DB.MaxOpen, testOptions.Workers, testOptions.Workers+reqpool.SpareConns)
	}
	if s.Pool.Completed != n*5 || s.Pool.Failed != 0 || s.Pool.Rejected != 0 {
		t.Errorf("pool stats %+v, want %d queries completed, none failed or rejected", s.Pool, n*5)
	}
	// Every dashboard is interactive, each request a flow of its own.
	want := []classStats{{Name: interactiveClass, Submitted: n * 5, Completed: n * 5}, {Name: reportsClass}}
	if !slices.Equal(s.Pool.Classes, want) {
		t.Errorf("classes %+v, want %+v", s.Pool.Classes, want)
	}
	// Requests counts requests that have fanned out and not ended: /stats
	// itself never fans out, so it touches nothing shared and counts none.
	if s.Pool.Requests != 0 || s.Pool.Running != 0 {
		t.Errorf("pool gauges %+v, want no live request and nothing running", s.Pool)
	}
	if s.DB.WaitCount != 0 || s.DB.Open > testOptions.Workers+reqpool.SpareConns {
		t.Errorf("db stats %+v, want no wait for a connection and at most %d open", s.DB, testOptions.Workers+reqpool.SpareConns)
	}
}

func TestHealthz(t *testing.T) {
	_, srv := startApp(t)
	resp, body := get(t, srv, "/healthz", "")
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %s %q, want 200 \"ok\\n\"", resp.Status, body)
	}
}

// runningQueries returns how many statements tagged with request id are
// running in PostgreSQL (or holding a transaction open), other than the
// caller's. The tag is passed as a parameter, so that the text of this
// query, which pg_stat_activity shows too, does not contain it.
func runningQueries(ctx context.Context, db *sqlx.DB, id string) (int, error) {
	var n int
	err := db.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity
WHERE state <> 'idle' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0`,
		"/*request_id='"+id+"'*/")
	return n, err
}

// waitQueries polls pg_stat_activity every 10 ms until ok accepts the number
// of running queries of request id, and returns how long that took. It fails
// the test if that takes longer than within.
func waitQueries(t *testing.T, db *sqlx.DB, id string, within time.Duration, ok func(n int) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithDeadline(t.Context(), deadline.Add(time.Second))
		n, err := runningQueries(ctx, db, id)
		cancel()
		if err != nil {
			t.Fatalf("query pg_stat_activity: %v", err)
		}
		if ok(n) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d queries of request %s still running", within, n, id)
		}
		<-tick.C
	}
}

// TestQueriesAreTagged checks the rules of the SQL constants (see
// store/dashboard.go and handlers.go): reqpool can tag them, and the tag fits in pg_stat_activity.
func TestQueriesAreTagged(t *testing.T) {
	const trackActivityQuerySize = 1024                       // PostgreSQL's default
	tag := "/*request_id='" + strings.Repeat("x", 64) + "'*/" // the longest id Middleware keeps
	for name, q := range map[string]string{
		"OrgSQL": store.OrgSQL, "UserCountSQL": store.UserCountSQL, "OpenOrdersSQL": store.OpenOrdersSQL,
		"RevenueSQL": store.RevenueSQL, "RecentEventsSQL": store.RecentEventsSQL,
		"ordersByStateQuery": ordersByStateQuery, "topCustomersQuery": topCustomersQuery,
		"eventsByKindQuery": eventsByKindQuery, "activeUsersQuery": activeUsersQuery,
	} {
		if strings.Contains(q, "--") || strings.Contains(q, "/*") {
			t.Errorf("%s has a comment: reqpool would leave it untagged", name)
		}
		if n := len(q) + 1 + len(tag); n >= trackActivityQuerySize {
			t.Errorf("%s is %d bytes tagged: pg_stat_activity would cut the tag off at %d", name, n, trackActivityQuerySize-1)
		}
	}
}

// scrape gets srv's /metrics, and returns the response, its body, and a
// function that reads it: the sum of the values of the counters, gauges or
// histograms (their counts) name whose labels include want, and whether
// there is one. The pool's figure is the sum over its classes.
func scrape(t *testing.T, srv *httptest.Server) (*http.Response, []byte, func(name string, want map[string]string) (float64, bool)) {
	t.Helper()
	resp, body := get(t, srv, "/metrics", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	value := func(name string, want map[string]string) (sum float64, found bool) {
		mf := families[name]
		if mf == nil {
			return 0, false
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			default:
				continue
			}
			found = true
		}
		return sum, found
	}
	return resp, body, value
}

// TestMetrics scrapes /metrics after one dashboard: the pool's 5 queries,
// their queue-wait histogram, and the database, Go and process collectors.
// The scrape itself passes outside reqpool.Middleware.
func TestMetrics(t *testing.T) {
	_, srv := startApp(t)
	var d store.Dashboard
	getJSON(t, srv, "/orgs/1/dashboard", "", &d)

	resp, body, value := scrape(t, srv)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want Prometheus' text format", ct)
	}
	if id, st := resp.Header.Get(reqpool.RequestIDHeader), resp.Header.Get("Server-Timing"); id != "" || st != "" {
		t.Errorf("GET /metrics: X-Request-ID %q, Server-Timing %q; want neither: it is no request of the pool", id, st)
	}
	if !strings.Contains(string(body), "reqpool_queue_wait_seconds_bucket{") {
		t.Errorf("no reqpool_queue_wait_seconds_bucket in /metrics:\n%s", body)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"reqpool_workers", nil, float64(testOptions.Workers)},
		{"reqpool_queries_total", map[string]string{"outcome": "ok"}, 5},
		{"reqpool_queries_total", map[string]string{"class": interactiveClass, "outcome": "ok"}, 5},
		{"reqpool_queries_total", map[string]string{"class": reportsClass}, 0},
		{"reqpool_queue_wait_seconds", map[string]string{"class": interactiveClass}, 5},
		{"reqpool_flows_active", map[string]string{"class": reportsClass}, 0},
		{"reqpool_queries_total", map[string]string{"outcome": "error"}, 0},
		{"reqpool_queries_total", map[string]string{"outcome": "dropped"}, 0},
		{"reqpool_rejected_total", map[string]string{"reason": "queue_full"}, 0},
		{"reqpool_queue_wait_seconds", nil, 5},
		{"reqpool_query_duration_seconds", nil, 5},
		{"reqpool_requests_active", nil, 0},
		{"go_sql_max_open_connections", map[string]string{"db_name": "dashboard"}, float64(testOptions.Workers + reqpool.SpareConns)},
	} {
		if got, ok := value(c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found: %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := value(name, nil); !ok {
			t.Errorf("no %s in /metrics", name)
		}
	}
}

// debugPage is the part of /debug/reqpool?format=json that the test reads.
type debugPage struct {
	Config reqpool.Config `json:"config"`
	Stats  reqpool.Stats  `json:"stats"`
	Window struct {
		Queries int `json:"queries"`
	} `json:"window"`
	QueueWait struct {
		P99 *float64 `json:"p99_seconds"`
	} `json:"queue_wait"`
	Requests []debugRequest `json:"requests"`
}

// debugRequest is a live request of the debug page's JSON.
type debugRequest struct {
	ID      string `json:"id"`
	Class   string `json:"class"`
	Flow    string `json:"flow"`
	Queued  int    `json:"queued"`
	Running int    `json:"running"`
	Place   int    `json:"place"`
}

// readDebugPage returns the debug page's JSON, from debug, which serves
// DebugHandler.
func readDebugPage(t *testing.T, debug *httptest.Server) debugPage {
	t.Helper()
	var page debugPage
	resp, body := get(t, debug, "/debug/reqpool?format=json", "")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("GET /debug/reqpool?format=json: %s, Content-Type %q; want 200 and JSON: %s", resp.Status, ct, body)
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("GET /debug/reqpool?format=json: decode %s: %v", body, err)
	}
	return page
}

// TestDebugPage serves DebugHandler as main does on its internal listener,
// and reads the page after one dashboard. The public handler does not serve
// it.
func TestDebugPage(t *testing.T) {
	a, srv := startApp(t)
	debug := httptest.NewServer(a.DebugHandler())
	t.Cleanup(debug.Close) // before startApp's cleanup shuts the pool down
	var d store.Dashboard
	getJSON(t, srv, "/orgs/1/dashboard", "", &d)

	page := readDebugPage(t, debug)
	if page.Config.Workers != testOptions.Workers || !page.Config.ServerTiming {
		t.Errorf("config %+v, want Workers %d and ServerTiming", page.Config, testOptions.Workers)
	}
	wantClasses := []reqpool.Class{
		{Name: interactiveClass, Share: testOptions.InteractiveShare, QueueSize: reqpool.DefaultQueueSize},
		{Name: reportsClass, Share: testOptions.ReportShare, QueueSize: testOptions.ReportQueue},
	}
	if !slices.Equal(page.Config.Classes, wantClasses) {
		t.Errorf("config.Classes %+v, want %+v", page.Config.Classes, wantClasses)
	}
	if s := page.Stats; s.Workers != testOptions.Workers || s.Submitted != 5 || s.Completed != 5 || s.Failed != 0 || s.Requests != 0 {
		t.Errorf("stats %+v, want 5 queries submitted and completed, and no live request", s)
	}
	wantStats := []reqpool.ClassStats{{Name: interactiveClass, Submitted: 5, Completed: 5}, {Name: reportsClass}}
	if !slices.Equal(page.Stats.Classes, wantStats) {
		t.Errorf("stats.Classes %+v, want %+v: the dashboard in the interactive class", page.Stats.Classes, wantStats)
	}
	if page.Window.Queries != 5 || page.QueueWait.P99 == nil {
		t.Errorf("window of %d queries, queue wait p99 %v; want 5 queries and a p99", page.Window.Queries, page.QueueWait.P99)
	}

	resp, body := get(t, debug, "/debug/reqpool", "")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET /debug/reqpool: %s, Content-Type %q; want 200 and HTML", resp.Status, ct)
	}
	if !strings.Contains(string(body), "reqpool") {
		t.Errorf("GET /debug/reqpool: a page without reqpool in it:\n%s", body)
	}
	if resp, _ := get(t, srv, "/debug/reqpool", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /debug/reqpool on the public listener: %s, want 404", resp.Status)
	}
}

// serverTimingRE matches the Server-Timing header that reqpool.Middleware
// adds to a dashboard, and captures its three durations in milliseconds.
var serverTimingRE = regexp.MustCompile(`^reqpool;dur=([0-9]+\.[0-9]{3});desc="wall time, 5 queries waiting or running", ` +
	`reqpool-wait;dur=([0-9]+\.[0-9]{3});desc="queue wait, summed over 5 queries", ` +
	`reqpool-run;dur=([0-9]+\.[0-9]{3});desc="run time, summed over 5 queries"$`)

// TestServerTiming checks the dashboard's Server-Timing: the wall time
// during which its 5 queries waited or ran, and how long they waited and
// ran, in all.
func TestServerTiming(t *testing.T) {
	_, srv := startApp(t)
	var d store.Dashboard
	start := time.Now()
	resp := getJSON(t, srv, "/orgs/1/dashboard", "", &d)
	took := time.Since(start)

	st := resp.Header.Get("Server-Timing")
	m := serverTimingRE.FindStringSubmatch(st)
	if m == nil {
		t.Fatalf("Server-Timing %q, want %s", st, serverTimingRE)
	}
	wall, _ := strconv.ParseFloat(m[1], 64)
	wait, _ := strconv.ParseFloat(m[2], 64)
	run, _ := strconv.ParseFloat(m[3], 64)
	// The wall time is within the request's; run time is summed over 5
	// parallel queries: it can exceed the request's own time, but not 5
	// times it.
	ms := float64(took) / float64(time.Millisecond)
	if wall <= 0 || wall > ms || run <= 0 || run > 5*ms || wait < 0 {
		t.Errorf("Server-Timing %q for a request of %v: want a wall time within it, and some run time, at most 5x it", st, took)
	}
	t.Logf("Server-Timing: %s (request took %v)", st, took.Round(10*time.Microsecond))
}

// TestTracing serves the app with an SDK TracerProvider that exports to
// memory: a dashboard gives a server span named after its route, and 5
// reqpool.query spans under it. A traceparent header continues the caller's
// trace, and /metrics is not traced.
func TestTracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) }) // after the app's cleanup
	_, srv := startTracedApp(t, tp)

	var d store.Dashboard
	getJSON(t, srv, "/orgs/1/dashboard", "test-trace-1", &d)
	server, queries := waitTrace(t, exp)
	if server.Name != "GET /orgs/{id}/dashboard" || server.Parent.IsValid() {
		t.Errorf("server span %q with parent %v, want GET /orgs/{id}/dashboard, a root", server.Name, server.Parent.SpanID())
	}
	attrs := spanAttrs(server)
	if attrs["http.route"] != "/orgs/{id}/dashboard" || attrs["http.response.status_code"] != "200" {
		t.Errorf("server span attributes %v, want http.route /orgs/{id}/dashboard and status 200", attrs)
	}
	indexes := map[string]bool{}
	for _, q := range queries {
		a := spanAttrs(q)
		if a["reqpool.request_id"] != "test-trace-1" || a["reqpool.query.outcome"] != "ok" {
			t.Errorf("query span attributes %v, want request id test-trace-1 and outcome ok", a)
		}
		if q.StartTime.Before(server.StartTime) || q.EndTime.After(server.EndTime) {
			t.Errorf("query span %v to %v outside the request's %v to %v", q.StartTime, q.EndTime, server.StartTime, server.EndTime)
		}
		indexes[a["reqpool.query.index"]] = true
	}
	if len(indexes) != 5 {
		t.Errorf("query indexes %v, want 0 to 4", indexes)
	}

	// The scrape leaves no span.
	exp.Reset()
	if resp, body := get(t, srv, "/metrics", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
	}
	if spans := exp.GetSpans(); len(spans) != 0 {
		t.Errorf("GET /metrics made %d spans, want none: %v", len(spans), spans)
	}

	// A caller's traceparent: the request's span is its child.
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/orgs/2/dashboard", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	server, _ = waitTrace(t, exp)
	if got := server.SpanContext.TraceID().String(); got != traceID || server.Parent.SpanID().String() != parentID || !server.Parent.IsRemote() {
		t.Errorf("span in trace %s under %v, want trace %s under the remote %s", got, server.Parent.SpanID(), traceID, parentID)
	}
}

// waitTrace waits up to 5 s for exp to hold a server span and the 5
// reqpool.query spans under it, and returns them. The server span ends as
// the handler returns, which can be after the client has its answer.
func waitTrace(t *testing.T, exp *tracetest.InMemoryExporter) (server tracetest.SpanStub, queries []tracetest.SpanStub) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		spans := exp.GetSpans()
		var servers []tracetest.SpanStub
		for _, s := range spans {
			if s.SpanKind == trace.SpanKindServer {
				servers = append(servers, s)
			}
		}
		if len(servers) == 1 {
			server, queries = servers[0], nil
			for _, s := range spans {
				if s.Name == "reqpool.query" && s.Parent.SpanID() == server.SpanContext.SpanID() && s.Parent.TraceID() == server.SpanContext.TraceID() {
					queries = append(queries, s)
				}
			}
			if len(queries) == 5 && len(spans) == 6 {
				exp.Reset()
				return server, queries
			}
		}
		if len(servers) > 1 || time.Now().After(deadline) {
			var names []string
			for _, s := range spans {
				names = append(names, fmt.Sprintf("%s (%s, parent %s)", s.Name, s.SpanKind, s.Parent.SpanID()))
			}
			t.Fatalf("want one server span and 5 reqpool.query spans under it, got %d spans: %s", len(spans), strings.Join(names, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// spanAttrs returns s's attributes as strings, by key.
func spanAttrs(s tracetest.SpanStub) map[string]string {
	m := make(map[string]string, len(s.Attributes))
	for _, kv := range s.Attributes {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

// TestListen serves an app as run does, on its two listeners: the
// endpoints and /metrics on the main one, /debug/reqpool on the internal one
// only. With no debug address there is one listener.
func TestListen(t *testing.T) {
	a, _ := startApp(t)
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	servers, err := listen(a, log, "127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 2 || servers[0].url == servers[1].url || !strings.HasPrefix(servers[1].url, "http://127.0.0.1:") {
		t.Fatalf("servers at %v, want two on loopback", servers)
	}
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() { s.Serve(s.ln) })
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
		wg.Wait()
	}()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	status := func(url string) int {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		url  string
		want int
	}{
		{servers[0].url + "/orgs/1/dashboard", http.StatusOK},
		{servers[0].url + "/metrics", http.StatusOK},
		{servers[0].url + "/debug/reqpool", http.StatusNotFound},
		{servers[1].url + "/debug/reqpool", http.StatusOK},
		{servers[1].url + "/debug/reqpool?format=json", http.StatusOK},
		{servers[1].url + "/metrics", http.StatusNotFound},
	} {
		if got := status(c.url); got != c.want {
			t.Errorf("GET %s: %d, want %d", c.url, got, c.want)
		}
	}
	if strings.Contains(logs.String(), "not on loopback") {
		t.Errorf("a warning for a debug listener on loopback: %s", logs.String())
	}

	one, err := listen(a, log, "127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	one[0].ln.Close()
	if len(one) != 1 {
		t.Errorf("%d listeners with -debug-addr '', want 1", len(one))
	}
}

// TestBanner checks the banner's lines for each setting: the first line,
// which the benchmarks look for, the classes, the debug page's URLs, the
// Server-Timing line, the tracing note, and the psql query.
func TestBanner(t *testing.T) {
	for _, b := range []banner{
		{URL: "http://127.0.0.1:8080", DebugURL: "http://127.0.0.1:41379", Workers: 16, ServerTiming: true, Trace: true, PSQL: "'postgres://u@h/db'",
			Classes: []reqpool.Class{{Name: interactiveClass, Share: 4, QueueSize: 1024}, {Name: reportsClass, Share: 1, QueueSize: 16}}, QueueSize: 1024},
		{URL: "http://127.0.0.1:8080", Workers: 4, PSQL: `"$DATABASE_URL"`, QueueSize: 1024},
	} {
		var buf strings.Builder
		printBanner(&buf, b)
		out := buf.String()
		t.Logf("banner for %+v:\n%s", b, out)
		for want, present := range map[string]bool{
			fmt.Sprintf("dashboard listening on %s (%d workers)\n", b.URL, b.Workers): true,
			"curl -s " + b.URL + "/orgs/1/dashboard\n":                                true,
			"curl -s " + b.URL + "/metrics | grep '^reqpool_'":                        true,
			"curl -si " + b.URL + "/orgs/1/dashboard | grep -i '^server-timing'":      b.ServerTiming,
			b.DebugURL + "/debug/reqpool ":                                            b.DebugURL != "",
			"curl -s '" + b.DebugURL + "/debug/reqpool?format=json'\n":                b.DebugURL != "",
			"Traces: ": b.Trace,
			"\n  interactive  share 4   queue 1024   dashboards, /stats: each request a flow of its own\n":         len(b.Classes) > 0,
			"\n  reports      share 1   queue 16     GET /orgs/{id}/report: a flow per org; past the queue, 503\n": len(b.Classes) > 0,
			"\nOne class and one queue (1024 queries) for all requests.\n":                                         len(b.Classes) == 0,
			`  echo "select pid, `: true,
			"query like '%request_id%' and pid <> pg_backend_pid() \\watch 0.5\" | psql " + b.PSQL + "\n": true,
		} {
			if strings.Contains(out, want) != present {
				t.Errorf("banner has %q: %v, want %v", want, !present, present)
			}
		}
		if !strings.HasPrefix(out, "dashboard listening on ") {
			t.Errorf("banner does not start with its URL line")
		}
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		path, class, flow string
	}{
		{"/orgs/7/report", reportsClass, "7"},
		{"/orgs/7/report?sleep=2", reportsClass, "7"},
		{"/orgs/007/report", reportsClass, "7"}, // the handler's org 7 too
		{"/orgs/abc/report", reportsClass, ""},  // 400, without a query
		{"/orgs/0/report", reportsClass, ""},
		{"/orgs/7/dashboard", interactiveClass, ""},
		{"/stats", interactiveClass, ""},
		{"/healthz", interactiveClass, ""},
		{"/orgs//report", interactiveClass, ""},
		{"/orgs/1/2/report", interactiveClass, ""},
		{"/orgs/7/report/", interactiveClass, ""},
		{"/orgs/7/reports", interactiveClass, ""},
		{"/", interactiveClass, ""},
	} {
		r := httptest.NewRequest(http.MethodGet, c.path, nil)
		if class, flow := classify(r); class != c.class || flow != c.flow {
			t.Errorf("classify(GET %s) = %q, %q; want %q, %q", c.path, class, flow, c.class, c.flow)
		}
	}
}

func TestNewPool(t *testing.T) {
	pool, err := newPool(defaultPoolOptions)
	if err != nil {
		t.Fatal(err)
	}
	c := pool.Config()
	pool.Shutdown(context.Background())
	want := []reqpool.Class{
		{Name: interactiveClass, Share: defaultInteractiveShare, QueueSize: reqpool.DefaultQueueSize},
		{Name: reportsClass, Share: defaultReportShare, QueueSize: defaultReportQueue},
	}
	if c.Workers != reqpool.DefaultWorkers || !c.ServerTiming || !slices.Equal(c.Classes, want) || c.Classify == nil {
		t.Errorf("the flags' defaults: %+v, want %d workers, Server-Timing, Classify, and classes %+v", c, reqpool.DefaultWorkers, want)
	}

	o := defaultPoolOptions
	o.Classes = false
	pool, err = newPool(o)
	if err != nil {
		t.Fatal(err)
	}
	if c := pool.Config(); len(c.Classes) != 0 || c.Classify != nil {
		t.Errorf("-classes=false: classes %+v, Classify set: %v; want neither", c.Classes, c.Classify != nil)
	}
	pool.Shutdown(context.Background())

	for _, bad := range []poolOptions{
		{Workers: 4, Classes: true, InteractiveShare: -1},
		{Workers: 4, Classes: true, ReportShare: -1},
		{Workers: 4, Classes: true, ReportQueue: -1},
		{Workers: 2, Classes: true, ReportQueue: 1}, // 2 + 1 < 4: no report could ever be admitted
	} {
		if pool, err := newPool(bad); err == nil {
			pool.Shutdown(context.Background())
			t.Errorf("newPool(%+v): no error", bad)
		} else {
			t.Logf("newPool(%+v): %v", bad, err)
		}
	}
	o = poolOptions{Workers: 2, Classes: true, ReportQueue: 2} // 2 + 2: a report fits
	if pool, err := newPool(o); err != nil {
		t.Errorf("newPool(%+v): %v", o, err)
	} else {
		pool.Shutdown(context.Background())
	}
}

// floodOptions are the pool of the report-flood tests: 8 workers, which
// two reports take, and a report queue of 4 reports.
var floodOptions = poolOptions{Workers: 8, ServerTiming: true, Classes: true,
	InteractiveShare: defaultInteractiveShare, ReportShare: defaultReportShare, ReportQueue: 4 * reportQueries}

// inFlight is a request that a test keeps in flight until it hangs up.
type inFlight struct {
	id     string
	hangUp context.CancelFunc
	done   chan answer // receives the answer, or the client's error
}

// answer is what a client got.
type answer struct {
	resp *http.Response
	body []byte
	err  error
}

// send sends GET path to srv with X-Request-ID id from a goroutine, and
// returns at once. The request has no deadline of its own: the test ends it
// with hangUp, or by the end of the test.
func send(t *testing.T, srv *httptest.Server, path, id string) *inFlight {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.Header.Set(reqpool.RequestIDHeader, id)
	f := &inFlight{id: id, hangUp: cancel, done: make(chan answer, 1)}
	go func() {
		resp, err := srv.Client().Do(req)
		if err != nil {
			f.done <- answer{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		f.done <- answer{resp, body, err}
	}()
	return f
}

// waitStats polls the pool's Stats every 2 ms until ok accepts them, and
// fails the test, saying what it waited for, if that takes 10 s.
func waitStats(t *testing.T, pool *reqpool.Pool, what string, ok func(s reqpool.Stats) bool) reqpool.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := pool.Stats()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s; stats %+v", what, s)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// classStatsOf returns the figures of class name in s.
func classStatsOf(s reqpool.Stats, name string) reqpool.ClassStats {
	for _, c := range s.Classes {
		if c.Name == name {
			return c
		}
	}
	return reqpool.ClassStats{Name: "(none: " + name + ")"}
}

// warmUp sends 16 dashboards and 4 reports of 50 ms at once, so that the
// debug page's distributions have some history, and waits until the pool is
// idle again.
func warmUp(t *testing.T, a *app, srv *httptest.Server) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		path := fmt.Sprintf("/orgs/%d/dashboard", 1+i)
		if i >= 16 {
			path = fmt.Sprintf("/orgs/%d/report?sleep=0.05", 1+i)
		}
		wg.Go(func() {
			resp, body, err := fetch(t.Context(), srv, path, "")
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	waitStats(t, a.pool, "an idle pool after the warm-up", func(s reqpool.Stats) bool { return s.Requests == 0 && s.Running == 0 })
}

// flood is the scene of the report-flood tests, on a pool of floodOptions
// (with or without its classes): two reports that take the 8 workers (org
// 3's first and org 12's), four that wait, filling the report queue (org 3's
// second and third, org 27's and org 41's), all of 30 s; then, with
// classes, org 8's report is refused. It returns the reports in flight, and
// hangs up on whichever are left when the test ends.
func flood(t *testing.T, a *app, srv *httptest.Server) map[string]*inFlight {
	t.Helper()
	reports := map[string]*inFlight{}
	t.Cleanup(func() {
		for _, f := range reports {
			f.hangUp()
		}
		for _, f := range reports {
			<-f.done
		}
	})
	running := func(s reqpool.Stats) int { return s.Running }
	queued := func(s reqpool.Stats) int { return s.Queued }
	for _, r := range []struct {
		id    string
		org   int
		gauge func(reqpool.Stats) int
		want  int
	}{
		{"report-org3-a", 3, running, 4},
		{"report-org12-a", 12, running, 8},
		{"report-org3-b", 3, queued, 4},
		{"report-org3-c", 3, queued, 8},
		{"report-org27-a", 27, queued, 12},
		{"report-org41-a", 41, queued, 16},
	} {
		reports[r.id] = send(t, srv, fmt.Sprintf("/orgs/%d/report?sleep=30", r.org), r.id)
		waitStats(t, a.pool, fmt.Sprintf("%s admitted, %d queries", r.id, r.want), func(s reqpool.Stats) bool { return r.gauge(s) == r.want })
	}
	return reports
}

// TestReportFlood floods the reports class, as several orgs asking for
// slow reports at once would: they hold every worker and fill the report
// queue. A report past that queue is refused at once with 503, but a
// dashboard is not: it waits in the interactive class, its queries start as
// soon as workers free up, ahead of the report queue, and it is answered
// while that queue is still full of reports. Everything is counted (the
// pool's Stats, the debug page's JSON), not timed: the reports sleep 30 s,
// and the test frees their workers by hanging up on one. With
// DASHBOARD_UPDATE_SCREENSHOT=1 it also writes the debug page of the flood,
// as headless Chromium shows it, to docs/debug-page.png.
func TestReportFlood(t *testing.T) {
	a, srv := startAppWith(t, floodOptions, nil)
	debug := httptest.NewServer(a.DebugHandler())
	t.Cleanup(debug.Close) // before startApp's cleanup shuts the pool down
	warmUp(t, a, srv)
	before := a.pool.Stats()
	reports := flood(t, a, srv)

	// Org 8's report does not fit into the report queue: 503 at once, with
	// Retry-After, counted as the reports class's rejection.
	resp, body := get(t, srv, "/orgs/8/report?sleep=30", "report-org8-a")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a report past the full report queue: %s, Retry-After %q (%s); want 503 with Retry-After",
			resp.Status, resp.Header.Get("Retry-After"), strings.TrimSpace(string(body)))
	}

	// A dashboard is admitted, in the interactive class, and waits: every
	// worker runs a report's query, and none is preempted.
	dash := send(t, srv, "/orgs/5/dashboard", "dash-org5")
	defer dash.hangUp()
	waitStats(t, a.pool, "the dashboard's 5 queries queued in the interactive class", func(s reqpool.Stats) bool {
		return classStatsOf(s, interactiveClass).Queued == 5
	})

	page := readDebugPage(t, debug)
	interactive, rep := classStatsOf(page.Stats, interactiveClass), classStatsOf(page.Stats, reportsClass)
	if interactive.Running != 0 || interactive.Queued != 5 || interactive.Rejected != before.Classes[0].Rejected {
		t.Errorf("interactive class %+v, want its 5 queries queued and no rejection", interactive)
	}
	if rep.Running != 8 || rep.Queued != 16 || rep.Flows != 4 || rep.Rejected != classStatsOf(before, reportsClass).Rejected+1 {
		t.Errorf("reports class %+v, want 8 running, 16 queued, 4 orgs' flows, and the one rejection", rep)
	}
	// Each report is in its org's flow; org 3's two waiting reports are
	// first and second in theirs. The dashboard is first in its own.
	want := []debugRequest{
		{"dash-org5", interactiveClass, "", 5, 0, 1},
		{"report-org12-a", reportsClass, "12", 0, 4, 0},
		{"report-org27-a", reportsClass, "27", 4, 0, 1},
		{"report-org3-a", reportsClass, "3", 0, 4, 0},
		{"report-org3-b", reportsClass, "3", 4, 0, 1},
		{"report-org3-c", reportsClass, "3", 4, 0, 2},
		{"report-org41-a", reportsClass, "41", 4, 0, 1},
	}
	got := slices.SortedFunc(slices.Values(page.Requests), func(a, b debugRequest) int { return strings.Compare(a.ID, b.ID) })
	if !slices.Equal(got, want) {
		t.Errorf("the debug page's requests\n%+v, want\n%+v", got, want)
	}
	_, html := get(t, debug, "/debug/reqpool", "")
	for _, s := range []string{`class="card classes"`, `<td class="class">reports</td><td class="flow">3</td>`, `<td class="class">interactive</td><td class="flow">–</td>`} {
		if !strings.Contains(string(html), s) {
			t.Errorf("the debug page has no %s", s)
		}
	}
	// /metrics counts the refusal in the reports class, none in the
	// interactive one.
	_, _, value := scrape(t, srv)
	for class, want := range map[string]float64{reportsClass: 1, interactiveClass: 0} {
		labels := map[string]string{"class": class, "reason": "queue_full"}
		if got, ok := value("reqpool_rejected_total", labels); !ok || got != want {
			t.Errorf("reqpool_rejected_total%v = %v (found: %v), want %v", labels, got, ok, want)
		}
	}
	if got, ok := value("reqpool_flows_active", map[string]string{"class": reportsClass}); !ok || got != 4 {
		t.Errorf("reqpool_flows_active{class=%q} = %v (found: %v), want 4: org 3, 12, 27 and 41", reportsClass, got, ok)
	}
	if os.Getenv("DASHBOARD_UPDATE_SCREENSHOT") == "1" {
		writeScreenshot(t, debug.URL+"/debug/reqpool", "../../docs/debug-page.png")
	}

	// Free org 3's first report's 4 workers: the dashboard's queries take
	// them, ahead of the 16 report queries waiting, and it is answered
	// while the report queue still holds at least the 12 that the other 4
	// workers cannot have started. No report query has ended but org 3's
	// first 4, cancelled (lib/pq may still be cancelling some of them): the
	// others sleep 30 s.
	reports["report-org3-a"].hangUp()
	ans := <-dash.done
	after := a.pool.Stats()
	if ans.err != nil {
		t.Fatal(ans.err)
	}
	var d store.Dashboard
	if ans.resp.StatusCode != http.StatusOK || json.Unmarshal(ans.body, &d) != nil || d.Org.ID != 5 {
		t.Fatalf("the dashboard during the flood: %s: %s", ans.resp.Status, ans.body)
	}
	interactive, rep = classStatsOf(after, interactiveClass), classStatsOf(after, reportsClass)
	if done := interactive.Completed - classStatsOf(before, interactiveClass).Completed; done != 5 || interactive.Rejected != 0 {
		t.Errorf("interactive class %+v: %d queries completed since the warm-up, want the dashboard's 5 and no rejection", interactive, done)
	}
	repBefore := classStatsOf(before, reportsClass)
	ended, cancelled := rep.Completed-repBefore.Completed, rep.Cancelled-repBefore.Cancelled
	if rep.Queued < 12 || ended != cancelled || cancelled > 4 || rep.Failed != repBefore.Failed {
		t.Errorf("reports class %+v when the dashboard was answered (after the warm-up: %+v): want at least 12 queries still queued, and no query ended but org 3's first 4, cancelled", rep, repBefore)
	}
	t.Logf("dashboard answered with %d report queries still queued; Server-Timing %s", rep.Queued, ans.resp.Header.Get("Server-Timing"))
}

// TestReportFloodWithoutClasses is TestReportFlood's flood on a pool of
// one class (-classes=false): the dashboard waits behind every report
// queued, fifth in the queue, as its 5 queries are more than a report's 4,
// and when workers free up, a waiting report takes them, not the dashboard.
func TestReportFloodWithoutClasses(t *testing.T) {
	o := floodOptions
	o.Classes = false
	a, srv := startAppWith(t, o, nil)
	debug := httptest.NewServer(a.DebugHandler())
	t.Cleanup(debug.Close)
	reports := flood(t, a, srv)
	dash := send(t, srv, "/orgs/5/dashboard", "dash-org5")
	t.Cleanup(func() { dash.hangUp(); <-dash.done })
	waitStats(t, a.pool, "the dashboard's 5 queries queued", func(s reqpool.Stats) bool { return s.Queued == 16+5 })

	page := readDebugPage(t, debug)
	i := slices.IndexFunc(page.Requests, func(r debugRequest) bool { return r.ID == "dash-org5" })
	if i < 0 || page.Requests[i] != (debugRequest{"dash-org5", "", "", 5, 0, 5}) {
		t.Errorf("the dashboard in the debug page's requests %+v, want it fifth in the queue", page.Requests)
	}

	// Free org 3's first report's 4 workers: a waiting report takes them,
	// and the dashboard still waits, with its 5 queries queued.
	reports["report-org3-a"].hangUp()
	s := waitStats(t, a.pool, "the freed workers taken", func(s reqpool.Stats) bool { return s.Running == 8 && s.Queued == 12+5 })
	if s.Completed != s.Cancelled || s.Cancelled != 4 || s.Failed != 0 {
		t.Errorf("stats %+v: want no query ended but org 3's 4 cancelled", s)
	}
	page = readDebugPage(t, debug)
	i = slices.IndexFunc(page.Requests, func(r debugRequest) bool { return r.ID == "dash-org5" })
	if i < 0 || page.Requests[i] != (debugRequest{"dash-org5", "", "", 5, 0, 4}) {
		t.Errorf("the dashboard in the debug page's requests %+v, want it fourth in the queue, with its 5 queries queued", page.Requests)
	}
}

// The size of docs/debug-page.png: as wide as the root module's debug page
// test takes its screenshots, and tall enough for the flood's classes and
// requests.
const shotWidth, shotHeight = 1200, 1040

// writeScreenshot has headless Chromium take a screenshot of url, with the
// flags of the root module's debug page test (debug_test.go), and writes it
// to path.
func writeScreenshot(t *testing.T, url, path string) {
	t.Helper()
	bin := cmp.Or(os.Getenv("CHROMIUM"), "/usr/bin/chromium")
	dir := t.TempDir()
	shot := filepath.Join(dir, "shot.png")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-proxy-server", "--user-data-dir="+filepath.Join(dir, "profile"),
		"--screenshot="+shot, fmt.Sprintf("--window-size=%d,%d", shotWidth, shotHeight), "--hide-scrollbars", url)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	// Its own process group, killed whole once it exits or times out, so
	// that no helper process of Chromium's outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v\n%s", err, out)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b != image.Rect(0, 0, shotWidth, shotHeight) {
		t.Fatalf("a screenshot of %v, want %d×%d", b, shotWidth, shotHeight)
	}
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}
