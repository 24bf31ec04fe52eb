package pgtest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/reqpool/reqpool"
)

// NotFound serves, through a real server, a dashboard of a row looked up
// with Get(...).Optional beside 4 other queries: for a row that exists, and
// for one that does not. A missing row is an answer (404), so it must cost
// no new PostgreSQL session (no sibling cancelled, no connection lost); the
// log line gives both medians.
func NotFound(t *testing.T, open Opener, dsn string) {
	const requests = 50
	p := NewPool(t, reqpool.Config{Workers: 8})
	db := Open(t, open, dsn, p)
	mon := NewMonitor(t)
	url, c := Serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		var name string
		var found bool
		var counts [4]int
		qs := []reqpool.Query{reqpool.Get(db, &name, "SELECT relname::text FROM pg_class WHERE relname = $1", r.URL.Query().Get("name")).Optional(&found)}
		for i := range counts {
			qs = append(qs, reqpool.Get(db, &counts[i], "SELECT count(*) FROM generate_series(1, 2000)"))
		}
		if err := reqpool.Fanout(r.Context(), qs...); err != nil {
			reqpool.WriteError(w, r, err)
			return
		}
		if !found {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, name, counts)
	})
	serve := func(name string, want int) time.Duration {
		var lat []time.Duration
		for i := range requests {
			start := time.Now()
			status, body, err := get(context.Background(), c, url+"?name="+name, fmt.Sprintf("%s-%d", name, i))
			if err != nil || status != want {
				t.Fatalf("GET ?name=%s: %d %q %v, want %d", name, status, body, err, want)
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		return lat[len(lat)/2]
	}
	serve("pg_class", http.StatusOK) // warm: the pool's connections are open
	since := mon.now(t)
	found := serve("pg_class", http.StatusOK)
	missing := serve("no_such_relation", http.StatusNotFound)
	sessions := mon.sessionsSince(t, since)
	if sessions != 0 {
		t.Errorf("%d new PostgreSQL sessions for %d found and %d missing dashboards, want 0", sessions, requests, requests)
	}
	t.Logf("dashboard of 5 queries, one looked up with Optional: p50 %v found, %v missing (%.2fx); %d new sessions",
		found.Round(10*time.Microsecond), missing.Round(10*time.Microsecond), float64(missing)/float64(found), sessions)
}

// now returns the server's clock.
func (m Monitor) now(t *testing.T) time.Time {
	t.Helper()
	var ts time.Time
	if err := m.db.QueryRow("SELECT clock_timestamp()").Scan(&ts); err != nil {
		t.Fatal(err)
	}
	return ts
}

// sessionsSince counts the client backends started after since, the
// monitor's own aside.
func (m Monitor) sessionsSince(t *testing.T, since time.Time) int {
	t.Helper()
	var n int
	err := m.db.QueryRow(`SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND backend_start > $1 AND pid <> pg_backend_pid()`, since).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
