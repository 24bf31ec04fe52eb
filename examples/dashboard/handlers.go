package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/examples/dashboard/store"
	"go.opentelemetry.io/otel/trace"
)

// The report's queries are real aggregates made slow on purpose, so that
// one can watch them in pg_stat_activity and see them cancelled. Each one
// sleeps $2 seconds first: (SELECT pg_sleep($2)) is an InitPlan, and the
// condition on it a one-time filter that PostgreSQL evaluates before reading
// any row. Joining pg_sleep($2) in FROM instead would be skipped whenever
// the org has no rows to join.
const (
	ordersByStateQuery = `SELECT state, count(*) AS orders, sum(amount_cents) AS amount_cents
FROM orders
WHERE org_id = $1 AND (SELECT pg_sleep($2)) IS NOT NULL
GROUP BY state ORDER BY state`

	topCustomersQuery = `SELECT u.id AS user_id, u.name, count(*) AS orders, sum(o.amount_cents) AS revenue_cents
FROM orders AS o JOIN users AS u ON u.id = o.user_id
WHERE o.org_id = $1 AND o.state IN ('paid', 'shipped') AND (SELECT pg_sleep($2)) IS NOT NULL
GROUP BY u.id ORDER BY revenue_cents DESC, u.id LIMIT 5`

	eventsByKindQuery = `SELECT kind, count(*) AS events
FROM events
WHERE org_id = $1 AND created_at >= now() - interval '30 days' AND (SELECT pg_sleep($2)) IS NOT NULL
GROUP BY kind ORDER BY events DESC, kind`

	activeUsersQuery = `SELECT count(DISTINCT user_id)
FROM events
WHERE org_id = $1 AND created_at >= now() - interval '30 days' AND (SELECT pg_sleep($2)) IS NOT NULL`
)

const (
	// dashboardTimeout bounds the dashboard's queries. Past it, they are
	// cancelled and the client gets 504: a dashboard that takes longer is
	// not worth the database time.
	dashboardTimeout = 5 * time.Second

	// defaultReportSleep and maxReportSleep are the report's default and
	// largest pg_sleep, in seconds.
	defaultReportSleep = 5
	maxReportSleep     = 60

	// maxReportTimeout is the largest timeout a report request may ask for,
	// in seconds.
	maxReportTimeout = 3600
)

// stateTotals is the orders of one state.
type stateTotals struct {
	State       string `db:"state" json:"state"`
	Orders      int64  `db:"orders" json:"orders"`
	AmountCents int64  `db:"amount_cents" json:"amount_cents"`
}

// customer is a user with what they spent.
type customer struct {
	UserID       int64  `db:"user_id" json:"user_id"`
	Name         string `db:"name" json:"name"`
	Orders       int64  `db:"orders" json:"orders"`
	RevenueCents int64  `db:"revenue_cents" json:"revenue_cents"`
}

// kindCount is the number of events of one kind.
type kindCount struct {
	Kind   string `db:"kind" json:"kind"`
	Events int64  `db:"events" json:"events"`
}

// report is the answer of GET /orgs/{id}/report.
type report struct {
	OrgID         int64         `json:"org_id"`
	SleepSeconds  float64       `json:"sleep_seconds"` // what each query slept
	OrdersByState []stateTotals `json:"orders_by_state"`
	TopCustomers  []customer    `json:"top_customers"`
	EventsByKind  []kindCount   `json:"events_by_kind_30d"`
	ActiveUsers   int64         `json:"active_users_30d"`
}

// poolStats is reqpool.Stats with JSON names.
type poolStats struct {
	Workers   int    `json:"workers"`
	Running   int    `json:"running"`
	Queued    int    `json:"queued"`
	Requests  int    `json:"requests"`
	Submitted uint64 `json:"submitted"`
	Completed uint64 `json:"completed"`
	Failed    uint64 `json:"failed"`
	Cancelled uint64 `json:"cancelled"`
	Dropped   uint64 `json:"dropped"`
	Rejected  uint64 `json:"rejected"`

	Classes []classStats `json:"classes"` // the same for each class; the pool's figures are their sums
}

// classStats is reqpool.ClassStats with JSON names.
type classStats struct {
	Name      string `json:"name"` // "" for the one class of -classes=false
	Running   int    `json:"running"`
	Queued    int    `json:"queued"`
	Flows     int    `json:"flows"` // named flows with work: orgs with a report in flight
	Submitted uint64 `json:"submitted"`
	Completed uint64 `json:"completed"`
	Failed    uint64 `json:"failed"`
	Cancelled uint64 `json:"cancelled"`
	Dropped   uint64 `json:"dropped"`
	Rejected  uint64 `json:"rejected"`
}

// dbStats is the part of sql.DBStats worth watching next to the pool.
type dbStats struct {
	MaxOpen        int     `json:"max_open"`
	Open           int     `json:"open"`
	InUse          int     `json:"in_use"`
	Idle           int     `json:"idle"`
	WaitCount      int64   `json:"wait_count"` // waits for a free connection: with MaxOpenConns = Workers, there should be none
	WaitDurationMS float64 `json:"wait_duration_ms"`
	MaxIdleClosed  int64   `json:"max_idle_closed"`
}

// stats is the answer of GET /stats.
type stats struct {
	Pool poolStats `json:"pool"`
	DB   dbStats   `json:"db"`
}

// app is the dashboard service: its pool, its database and its routes. It
// does not listen: main serves Handler and DebugHandler with http.Servers,
// and the tests with httptest.
type app struct {
	db      *sqlx.DB
	pool    *reqpool.Pool
	log     *slog.Logger
	handler http.Handler
	untrace func() // detaches reqotel from the pool; nil without tracing
}

// newApp returns the service for db and pool; db should come from
// store.Open for the same pool, which sizes its connection pool to the
// pool's Workers. With a TracerProvider tp, each request gets a server span
// (otelhttp) and each of its queries a reqpool.query span under it
// (reqotel); with nil, nothing is traced. Make one app per pool: its
// metrics attach to the pool for the pool's life. Call Shutdown when done;
// db and tp stay the caller's to close.
func newApp(db *sqlx.DB, pool *reqpool.Pool, log *slog.Logger, tp trace.TracerProvider) (*app, error) {
	a := &app{db: db, pool: pool, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orgs/{id}/dashboard", a.dashboard)
	mux.HandleFunc("GET /orgs/{id}/report", a.report)
	mux.HandleFunc("GET /stats", a.stats)
	mux.HandleFunc("GET /healthz", a.healthz)
	routes := reqpool.Middleware(pool)(nameSpan(mux))
	if tp != nil {
		var err error
		if routes, a.untrace, err = traced(pool, routes, tp); err != nil {
			return nil, err
		}
	}
	metrics := metricsHandler(pool, db.DB, log)
	// /metrics stays outside reqpool.Middleware and otelhttp: a scrape is
	// no request of the service, gets no request id, no Server-Timing and
	// no span. Everything else, unknown paths included, goes through them.
	a.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			metrics.ServeHTTP(w, r)
			return
		}
		routes.ServeHTTP(w, r)
	})
	return a, nil
}

// Handler returns the service's HTTP handler, for the public listener:
// GET /metrics, and every other route behind reqpool.Middleware (and
// otelhttp, when tracing).
func (a *app) Handler() http.Handler { return a.handler }

// DebugHandler returns the handler for the internal listener:
// /debug/reqpool, the pool's live page (?format=json for JSON). The page
// shows request ids, which clients choose, and what every request is doing,
// so it must not be served publicly. The first call attaches the page's
// Observer to the pool for the pool's life, so that its distributions cover
// the queries from then on: call it at start-up, and only when serving it.
func (a *app) DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/debug/reqpool", a.pool.DebugHandler())
	return mux
}

// Shutdown closes the pool once its admitted queries are done, or cancels
// them when ctx ends first; see reqpool.Pool.Shutdown. Shut the HTTP server
// down first, so that no handler is left to fan out. When ctx ends first,
// a second Shutdown gives the cancelled queries up to drainTimeout to
// return, before it returns ctx's error: lib/pq takes a few milliseconds to
// cancel a statement, and in that time the handlers answer 503 and, with
// tracing, the queries' spans are recorded. Last, it detaches reqotel from
// the pool; the TracerProvider stays the caller's to shut down, which
// writes the spans it still holds.
func (a *app) Shutdown(ctx context.Context) error {
	err := a.pool.Shutdown(ctx)
	if err != nil {
		drain, cancel := context.WithTimeout(context.Background(), drainTimeout)
		a.pool.Shutdown(drain) // waits for the queries that the first one cancelled
		cancel()
	}
	if a.untrace != nil {
		a.untrace()
	}
	return err
}

// drainTimeout bounds the wait of Shutdown for the queries it cancelled.
const drainTimeout = time.Second

// dashboard answers GET /orgs/{id}/dashboard: the org, its user count, its
// open orders, its revenue per month and its latest events, from 5 queries
// run in parallel.
func (a *app) dashboard(w http.ResponseWriter, r *http.Request) {
	id, ok := orgID(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dashboardTimeout)
	defer cancel()

	// The five queries are reqpool.Get and reqpool.Select calls on a.db;
	// see store.Dashboard.Queries.
	d := store.NewDashboard()
	err := reqpool.Fanout(ctx, d.Queries(a.db, id)...)
	// A missing org fails the Get, which cancels the other four queries.
	// That is cheap in time, but lib/pq pays for cancelling a statement in
	// flight with its connection: it sends the cancel request on a new one
	// and closes the old. An API that expects many unknown ids would rather
	// look the org up first, at the price of a round trip for every request.
	if errors.Is(err, sql.ErrNoRows) {
		http.Error(w, "org not found", http.StatusNotFound)
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, r, d)
}

// report answers GET /orgs/{id}/report?sleep=SECONDS[&timeout=SECONDS]: 4
// aggregates of the org, each made to sleep first (default 5 s, at most 60),
// so that there is time to hang up and watch the queries go. With a timeout
// above 0, the queries are cancelled after that long and the answer is 504. It does
// not check that the org exists: an unknown org gets an empty report. Its
// queries are in the reports class, in the org's flow (see classify): when
// they fit neither into the free workers nor into the report queue, the
// answer is 503 at once.
func (a *app) report(w http.ResponseWriter, r *http.Request) {
	id, ok := orgID(w, r)
	if !ok {
		return
	}
	sleep, err := seconds(r, "sleep", defaultReportSleep, maxReportSleep)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	timeout, err := seconds(r, "timeout", 0, maxReportTimeout)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeout*float64(time.Second)))
		defer cancel()
	}

	rep := report{OrgID: id, SleepSeconds: sleep,
		OrdersByState: []stateTotals{}, TopCustomers: []customer{}, EventsByKind: []kindCount{}}
	err = reqpool.Fanout(ctx,
		reqpool.Select(a.db, &rep.OrdersByState, ordersByStateQuery, id, sleep),
		reqpool.Select(a.db, &rep.TopCustomers, topCustomersQuery, id, sleep),
		reqpool.Select(a.db, &rep.EventsByKind, eventsByKindQuery, id, sleep),
		reqpool.Get(a.db, &rep.ActiveUsers, activeUsersQuery, id, sleep),
	)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, r, rep)
}

// stats answers GET /stats with the pool's and the database's gauges and
// counters.
func (a *app) stats(w http.ResponseWriter, r *http.Request) {
	p, d := a.pool.Stats(), a.db.Stats()
	classes := make([]classStats, len(p.Classes))
	for i, c := range p.Classes {
		classes[i] = classStats{Name: c.Name, Running: c.Running, Queued: c.Queued, Flows: c.Flows,
			Submitted: c.Submitted, Completed: c.Completed, Failed: c.Failed, Cancelled: c.Cancelled, Dropped: c.Dropped, Rejected: c.Rejected}
	}
	a.writeJSON(w, r, stats{
		Pool: poolStats{
			Workers: p.Workers, Running: p.Running, Queued: p.Queued, Requests: p.Requests,
			Submitted: p.Submitted, Completed: p.Completed, Failed: p.Failed, Cancelled: p.Cancelled, Dropped: p.Dropped, Rejected: p.Rejected,
			Classes: classes,
		},
		DB: dbStats{
			MaxOpen: d.MaxOpenConnections, Open: d.OpenConnections, InUse: d.InUse, Idle: d.Idle,
			WaitCount: d.WaitCount, WaitDurationMS: float64(d.WaitDuration) / float64(time.Millisecond),
			MaxIdleClosed: d.MaxIdleClosed,
		},
	})
}

// healthz answers GET /healthz with 200 "ok". It is a liveness check: it
// does not touch the database, so that a database outage does not get the
// process restarted for nothing.
func (a *app) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// fail answers a request whose Fanout failed with err, and logs err with
// the request id: the client gets a status, the log the detail.
func (a *app) fail(w http.ResponseWriter, r *http.Request, err error) {
	log := a.log.With("route", r.Pattern, "request_id", reqpool.RequestID(r.Context()), "err", err)
	switch status := reqpool.ErrorStatus(r, err); {
	case status == http.StatusServiceUnavailable:
		log.Warn("refused: overloaded, shutting down or database unavailable")
	case status == http.StatusGatewayTimeout:
		log.Warn("deadline exceeded; queries cancelled")
	case status == 0:
		log.Info("client went away or request deadline passed; its queries were cancelled")
	default:
		log.Error("queries failed")
	}
	reqpool.WriteError(w, r, err)
}

// writeJSON answers with v as JSON.
func (a *app) writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	// Encode first, so that a failure can still be answered with a 500.
	body, err := json.Marshal(v)
	if err != nil {
		a.log.Error("encode response", "route", r.Pattern, "request_id", reqpool.RequestID(r.Context()), "err", err)
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(body, '\n'))
}

// orgID returns the {id} of the request's path. When it is not a positive
// integer, it answers 400 and returns false.
func orgID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "invalid org id: want a positive integer", http.StatusBadRequest)
		return 0, false
	}
	return id, true
}

// seconds returns the query parameter name as a number of seconds: def when
// it is absent, limit when it is larger, an error when it is not a number or
// is negative.
func seconds(r *http.Request, name string, def, limit float64) (float64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(s) || s < 0 {
		return 0, fmt.Errorf("invalid %s: want a number of seconds >= 0", name)
	}
	return min(s, limit), nil
}
