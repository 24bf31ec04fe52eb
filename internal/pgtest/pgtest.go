// Package pgtest holds the PostgreSQL scenarios that both openers must pass,
// reqpool.OpenPostgres (lib/pq) in the root module's tests and reqpgx.Open
// (pgx) in reqpgx's: one copy of each scenario, run for each driver, each
// directly against PostgreSQL and through PgBouncer in transaction mode.
//
// The servers come from the environment that scripts/with-postgres.sh sets:
// DATABASE_URL (PostgreSQL), PGBOUNCER_URL (PgBouncer in transaction mode in
// front of it) and REQPOOL_PGCTL (stops and starts that PostgreSQL). Without
// them the scenarios skip, except under CI=true, where they fail.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/internal/reqtest"
)

// Opener is reqpool.OpenPostgres or reqpgx.Open.
type Opener func(dsn string, p *reqpool.Pool) (*sqlx.DB, error)

// Target is a server to run a scenario against.
type Target struct {
	Name string // "direct" or "pgbouncer"
	DSN  string
}

// Targets returns PostgreSQL itself and PgBouncer in front of it.
func Targets(t *testing.T) []Target {
	return []Target{{"direct", Env(t, "DATABASE_URL")}, {"pgbouncer", Env(t, "PGBOUNCER_URL")}}
}

// Env returns the environment variable name, skipping the test when it is
// unset, or failing it under CI=true: CI must never pass by skipping.
func Env(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set and CI=true: PostgreSQL tests must run (use make test)", name)
		}
		t.Skipf("%s is not set: skipping (make test starts a throwaway PostgreSQL and PgBouncer)", name)
	}
	return v
}

// NewPool returns a pool shut down when the test ends (reqtest.NewPool).
func NewPool(t testing.TB, cfg reqpool.Config) *reqpool.Pool { return reqtest.NewPool(t, cfg) }

// Open opens dsn with open for p, closed when the test ends.
func Open(t testing.TB, open Opener, dsn string, p *reqpool.Pool) *sqlx.DB {
	t.Helper()
	db, err := open(dsn, p)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Serve runs h behind reqpool.Middleware on a real HTTP server, closed when
// the test ends, and returns its URL and a client.
func Serve(t testing.TB, p *reqpool.Pool, h http.HandlerFunc) (string, *http.Client) {
	srv := httptest.NewServer(reqpool.Middleware(p)(h))
	t.Cleanup(srv.Close)
	c := srv.Client()
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 100
	t.Cleanup(c.CloseIdleConnections)
	return srv.URL, c
}

// get sends GET url with the request id and returns the status and body.
func get(ctx context.Context, c *http.Client, url, id string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set(reqpool.RequestIDHeader, id)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// Monitor watches pg_stat_activity over a lib/pq connection of its own,
// directly on PostgreSQL (DATABASE_URL), whatever the scenario goes through.
type Monitor struct {
	t  *testing.T
	db *sql.DB
}

// NewMonitor returns a Monitor, closed when the test ends.
func NewMonitor(t *testing.T) Monitor {
	c, err := pq.NewConnector(Env(t, "DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(2)
	t.Cleanup(func() { db.Close() })
	return Monitor{t, db}
}

// Active counts the statements executing on the server whose request-id
// tag starts with prefix. The pattern is a parameter, so the monitor's own
// statement never matches it.
func (m Monitor) Active(prefix string) int {
	m.t.Helper()
	var n int
	err := m.db.QueryRow(`SELECT count(*) FROM pg_stat_activity
		WHERE state = 'active' AND pid <> pg_backend_pid() AND position($1 in query) > 0`,
		"/*request_id='"+prefix).Scan(&n)
	if err != nil {
		m.t.Errorf("pg_stat_activity: %v", err)
		return -1
	}
	return n
}

// WaitFor polls every 5 ms until Active(prefix) satisfies ok, and fails the
// test after limit. The server has no notification for this.
func (m Monitor) WaitFor(prefix string, ok func(int) bool, limit time.Duration) time.Duration {
	m.t.Helper()
	start := time.Now()
	for {
		n := m.Active(prefix)
		if ok(n) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			m.t.Fatalf("after %v, %d statements active for %q", limit, n, prefix)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// UniqueID returns a request-id prefix unique to this run.
func UniqueID(name string) string { return fmt.Sprintf("%s-%d", name, time.Now().UnixNano()) }

// Suite runs every scenario with open: Results, CancelKeepsConnection,
// NotFound and HangUpSoak against each of Targets, then SpareConns, Shortage, Outage and Adaptive. Each opener's module has one test that calls it.
func Suite(t *testing.T, open Opener) {
	for _, tg := range Targets(t) {
		t.Run("results/"+tg.Name, func(t *testing.T) { Results(t, open, tg.DSN, 16, 2400) })
		t.Run("keep/"+tg.Name, func(t *testing.T) { CancelKeepsConnection(t, open, tg.DSN) })
		t.Run("notfound/"+tg.Name, func(t *testing.T) { NotFound(t, open, tg.DSN) })
		t.Run("hangup/"+tg.Name, func(t *testing.T) { HangUpSoak(t, open, tg.DSN, 1000, 50) })
	}
	t.Run("spare", func(t *testing.T) { SpareConns(t, open, Env(t, "DATABASE_URL")) })
	t.Run("shortage", func(t *testing.T) { Shortage(t, open) })
	t.Run("outage", func(t *testing.T) { Outage(t, open, "fast") })
	t.Run("outage/immediate", func(t *testing.T) { Outage(t, open, "immediate") })
	t.Run("adaptive", func(t *testing.T) { Adaptive(t, open) })
}
