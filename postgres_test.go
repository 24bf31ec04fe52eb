package reqpool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/reqpool/reqpool/internal/pgwire"
)

// These tests run against a real PostgreSQL given by DATABASE_URL; make test
// starts a throwaway one (scripts/with-postgres.sh). Without it they skip,
// except under CI=true, where they fail: CI must never pass by skipping them.

// openDB opens DATABASE_URL the way the README recommends, with
// pq.NewConnector, and closes it when the test ends.
func openDB(t *testing.T, maxOpen int) *sqlx.DB {
	t.Helper()
	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("DATABASE_URL is not set and CI=true: PostgreSQL tests must run (use make test)")
		}
		t.Skip("DATABASE_URL is not set: skipping PostgreSQL tests (make test starts a throwaway server)")
	}
	return openDSN(t, dsn, maxOpen)
}

func openDSN(t *testing.T, dsn string, maxOpen int) *sqlx.DB {
	t.Helper()
	conn, err := pq.NewConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := sqlx.NewDb(sql.OpenDB(conn), "postgres")
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	t.Cleanup(func() { db.Close() })
	return db
}

// monitor watches pg_stat_activity from a connection pool of its own.
type monitor struct {
	t  *testing.T
	db *sqlx.DB
}

func newMonitor(t *testing.T) monitor { return monitor{t, openDB(t, 2)} }

// active counts the statements executing on the server whose text carries a
// request id starting with prefix. The pattern goes in as a parameter, so
// the monitor's own statement never matches it.
func (m monitor) active(prefix string) int {
	var n int
	err := m.db.Get(&n, `SELECT count(*) FROM pg_stat_activity
		WHERE state = 'active' AND pid <> pg_backend_pid() AND position($1 in query) > 0`,
		"/*request_id='"+prefix)
	if err != nil {
		m.t.Errorf("pg_stat_activity: %v", err)
		return -1
	}
	return n
}

// waitFor polls until active(prefix) satisfies ok, and returns how long that
// took, failing the test after limit. The server offers no notification of
// this, so polling every 5 ms it is.
func (m monitor) waitFor(prefix string, ok func(int) bool, limit time.Duration) time.Duration {
	m.t.Helper()
	start := time.Now()
	for {
		n := m.active(prefix)
		if ok(n) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			m.t.Fatalf("after %v, %d statements active for %q", limit, n, prefix)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func uniqueID(name string) string { return fmt.Sprintf("%s-%d", name, time.Now().UnixNano()) }

// TestPostgresClientDisconnect: a client hangs up while its fan-out runs
// pg_sleep. The statements must leave the server within 500 ms, the queued
// ones never start, the connections come back, and the next request works.
func TestPostgresClientDisconnect(t *testing.T) {
	const workers = 4
	db := openDB(t, workers)
	mon := newMonitor(t)
	p := newPool(t, Config{Workers: workers})
	served := make(chan struct{}, 2)
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		stmt := "SELECT pg_sleep(" + r.URL.Query().Get("s") + ")"
		if err := Fanout(r.Context(), repeat(8, Exec(db, stmt))...); err != nil {
			WriteError(w, r, err)
			return
		}
		w.Write([]byte("ok"))
	}, func() { served <- struct{}{} })

	id := uniqueID("disconnect")
	ctx, hangUp := context.WithCancel(context.Background())
	defer hangUp()
	replied := make(chan reply, 1)
	go func() { replied <- get(ctx, c, srv.URL+"?s=30", RequestIDHeader, id) }()
	mon.waitFor(id, func(n int) bool { return n == workers }, 10*time.Second)
	hangUp()
	gone := mon.waitFor(id, func(n int) bool { return n == 0 }, 5*time.Second)
	<-served
	<-replied
	s := p.Stats()
	inUse := db.Stats().InUse
	t.Logf("statements gone from pg_stat_activity %v after the hang-up; pool %+v; db in use %d", gone, s, inUse)
	if gone > 500*time.Millisecond {
		t.Errorf("the statements stayed on the server %v after the hang-up, want < 500ms", gone)
	}
	if s.Submitted != 8 || s.Completed != workers || s.Dropped != 8-workers {
		t.Errorf("pool %+v: the queued statements must never start", s)
	}
	if inUse != 0 {
		t.Errorf("db.Stats().InUse = %d after the request ended", inUse)
	}
	if n := mon.active(id); n != 0 {
		t.Errorf("%d statements of the request started after it ended", n)
	}
	if r := get(context.Background(), c, srv.URL+"?s=0"); r.status != http.StatusOK {
		t.Errorf("next request: %+v", r)
	}
}

// TestPostgresActiveNeverExceedsWorkers: database/sql would allow 10
// connections; the pool allows 3 statements, and the server sees no more.
func TestPostgresActiveNeverExceedsWorkers(t *testing.T) {
	const workers = 3
	db := openDB(t, 10)
	mon := newMonitor(t)
	p := newPool(t, Config{Workers: workers})
	prefix := uniqueID("bound")

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Go(func() {
			ctx, release := p.newContext(context.Background(), fmt.Sprintf("%s-%d", prefix, i))
			defer release()
			errs <- Fanout(ctx, repeat(6, Exec(db, "SELECT pg_sleep(0.1)"))...)
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	peak := 0
	for sampling := true; sampling; {
		select {
		case <-done:
			sampling = false
		default:
			peak = max(peak, mon.active(prefix))
			time.Sleep(5 * time.Millisecond)
		}
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("peak statements active on the server: %d (Workers %d, MaxOpenConns 10)", peak, workers)
	if peak > workers || peak < 2 {
		t.Errorf("peak %d statements active on the server, want 2..%d", peak, workers)
	}
}

// TestPostgresFailureCancelsSiblings: bad SQL fails the Fanout with its
// *pq.Error, and the sleeping siblings are cancelled on the server.
func TestPostgresFailureCancelsSiblings(t *testing.T) {
	db := openDB(t, 4)
	mon := newMonitor(t)
	p := newPool(t, Config{Workers: 4})
	id := uniqueID("failure")
	ctx, release := p.newContext(context.Background(), id)
	defer release()

	var n int
	bad := make(chan struct{})
	start := time.Now()
	err := Fanout(ctx,
		Exec(db, "SELECT pg_sleep(30)"),
		Exec(db, "SELECT pg_sleep(30)"),
		Func(func(ctx context.Context) error { // fail once the sleeps are on the server
			mon.waitFor(id, func(n int) bool { return n == 2 }, 10*time.Second)
			close(bad)
			return Get(db, &n, "SELEC 1").run(ctx)
		}),
	)
	<-bad
	var pqErr *pq.Error
	var qe *QueryError
	if !errors.As(err, &pqErr) || pqErr.Code != "42601" || !errors.As(err, &qe) || qe.Index != 2 {
		t.Fatalf("Fanout = %v, want *QueryError{Index: 2} wrapping a *pq.Error with code 42601", err)
	}
	gone := mon.waitFor(id, func(n int) bool { return n == 0 }, 5*time.Second)
	t.Logf("Fanout returned after %v; siblings gone from the server %v later", time.Since(start), gone)
	if gone > 500*time.Millisecond {
		t.Errorf("siblings stayed on the server %v after the failure", gone)
	}
}

// TestPostgresRequestIDInStatement: the request id shows in the running
// statement's text, and hostile ids change nothing.
func TestPostgresRequestIDInStatement(t *testing.T) {
	db := openDB(t, 4)
	mon := newMonitor(t)
	p := newPool(t, Config{Workers: 2})
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS reqpool_victim (x int); TRUNCATE reqpool_victim; INSERT INTO reqpool_victim VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec(`DROP TABLE IF EXISTS reqpool_victim`) })
	ids := make(chan string, 1)
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		h, _ := FromContext(r.Context())
		ids <- h.ID()
		WriteError(w, r, Fanout(r.Context(), Exec(db, "SELECT pg_sleep(0.3);")))
	}, nil)

	for _, header := range []string{uniqueID("trace"), "*/ DELETE FROM reqpool_victim; /*", "x'; DELETE FROM reqpool_victim; --"} {
		done := make(chan reply, 1)
		go func() { done <- get(context.Background(), c, srv.URL, RequestIDHeader, header) }()
		id := <-ids
		var text string
		mon.waitFor(id, func(n int) bool { return n == 1 }, 5*time.Second)
		if err := mon.db.Get(&text, `SELECT query FROM pg_stat_activity WHERE position($1 in query) > 0 AND pid <> pg_backend_pid()`, id); err != nil {
			t.Fatal(err)
		}
		want := "SELECT pg_sleep(0.3) /*request_id='" + id + "'*/;"
		if text != want {
			t.Errorf("X-Request-ID %q: the server runs %q, want %q", header, text, want)
		}
		if r := <-done; r.status != http.StatusOK {
			t.Errorf("X-Request-ID %q: %+v", header, r)
		}
	}
	// Even an id that bypassed the header check could not change the SQL.
	for _, hostile := range []string{"*/ DELETE FROM reqpool_victim; /*", "'\n\x00;--", "/* nested /* */", strings.Repeat("*/", 5000)} {
		var one int
		if err := db.Get(&one, appendComment("SELECT 1;", "request_id", hostile)); err != nil || one != 1 {
			t.Errorf("tagged with %.40q: %v, %d", hostile, err, one)
		}
	}
	var rows int
	if err := db.Get(&rows, `SELECT count(*) FROM reqpool_victim`); err != nil || rows != 1 {
		t.Errorf("victim table: %d rows, %v", rows, err)
	}
}

// TestPostgresSharedTx: two queries of one Fanout on one transaction are
// refused before either runs, and the transaction stays usable.
func TestPostgresSharedTx(t *testing.T) {
	db := openDB(t, 2)
	p := newPool(t, Config{})
	ctx := handleCtx(t, p)
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var a, b int
	err = Fanout(ctx, Get(tx, &a, "SELECT 1"), Get(db, &b, "SELECT 2"), Get(tx, &b, "SELECT 3"))
	var qe *QueryError
	if !errors.Is(err, ErrSharedConn) || !errors.As(err, &qe) || qe.Index != 2 || a != 0 || b != 0 {
		t.Fatalf("Fanout = %v (a=%d, b=%d), want ErrSharedConn for query 2 and nothing run", err, a, b)
	}
	// One query per transaction is fine, and the transaction still works.
	if err := Fanout(ctx, Get(tx, &a, "SELECT 1"), Get(db, &b, "SELECT 2")); err != nil || a != 1 || b != 2 {
		t.Fatalf("Fanout = %v (a=%d, b=%d)", err, a, b)
	}
}

func TestPostgresQueries(t *testing.T) {
	db := openDB(t, 4)
	p := newPool(t, Config{})
	ctx := handleCtx(t, p)
	table := "reqpool_q_" + fmt.Sprint(time.Now().UnixNano())
	if _, err := db.Exec(`CREATE TABLE ` + table + ` (id int PRIMARY KEY, name text, org int)`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec(`DROP TABLE ` + table) })

	var res sql.Result
	if err := Fanout(ctx,
		ExecResult(db, &res, `INSERT INTO `+table+` SELECT g, 'user' || g, g % 2 FROM generate_series(1, 10) g`),
	); err != nil {
		t.Fatal(err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 10 {
		t.Errorf("RowsAffected = %d, %v", n, err)
	}

	type user struct {
		ID   int
		Name string
	}
	var users []user
	var count int
	var missing user
	err := Fanout(ctx,
		Select(db, &users, `SELECT id, name FROM `+table+` WHERE org = $1 ORDER BY id`, 1),
		Get(db, &count, `SELECT count(*) FROM `+table+` WHERE org = $1`, 0),
	)
	if err != nil || len(users) != 5 || users[0] != (user{1, "user1"}) || count != 5 {
		t.Fatalf("Fanout = %v; users %v, count %d", err, users, count)
	}
	err = Fanout(ctx, Get(db, &missing, `SELECT id, name FROM `+table+` WHERE id = $1`, 99), Exec(db, "SELECT 1"))
	var qe *QueryError
	if !errors.Is(err, sql.ErrNoRows) || !errors.As(err, &qe) || qe.Index != 0 {
		t.Errorf("Get of a missing row: %v, want sql.ErrNoRows from query 0", err)
	}
}

// TestPostgresDatabaseDown: an unreachable server gives errors, not a hang,
// and a backend terminated mid-query fails that query; the pool and the
// sql.DB go on working.
func TestPostgresDatabaseDown(t *testing.T) {
	db := openDB(t, 4)
	mon := newMonitor(t)
	p := newPool(t, Config{Workers: 4})

	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		dead := openDSN(t, "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=2", 4)
		ctx := handleCtx(t, p)
		var n int
		start := time.Now()
		err = Fanout(ctx, Get(dead, &n, "SELECT 1"), Get(dead, &n, "SELECT 2"))
		t.Logf("unreachable server: %v after %v", err, time.Since(start))
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			t.Errorf("Fanout = %v, want the dial error", err)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("took %v", time.Since(start))
		}
	})

	// lib/pq reports a terminated backend as driver.ErrBadConn, so
	// database/sql runs the statement again on a fresh connection, up to
	// three times in all. Terminate each attempt: the Fanout must then fail,
	// promptly, and the next one must work.
	t.Run("terminated", func(t *testing.T) {
		id := uniqueID("terminated")
		ctx, release := p.newContext(context.Background(), id)
		defer release()
		errc := make(chan error, 1)
		go func() { errc <- Fanout(ctx, Exec(db, "SELECT pg_sleep(30)")) }()
		start := time.Now()
		terminated := 0
		var err error
	loop:
		for {
			select {
			case err = <-errc:
				break loop
			case <-time.After(5 * time.Millisecond):
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("Fanout hung after %d terminations", terminated)
			}
			var pids []int
			if err := mon.db.Select(&pids, `SELECT pid FROM pg_stat_activity
				WHERE position($1 in query) > 0 AND state = 'active' AND pid <> pg_backend_pid()`, id); err != nil {
				t.Fatal(err)
			}
			for _, pid := range pids {
				if _, err := mon.db.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
					t.Fatal(err)
				}
				terminated++
			}
		}
		t.Logf("terminated %d backends: Fanout = %v after %v", terminated, err, time.Since(start))
		if err == nil || terminated == 0 {
			t.Errorf("Fanout = %v after %d terminations, want an error", err, terminated)
		}
		var one int
		if err := Fanout(ctx, Get(db, &one, "SELECT 1")); err != nil || one != 1 {
			t.Errorf("after the terminations: %v", err)
		}
	})
}

// TestPostgresDeadline: lib/pq reports a statement cancelled by a deadline
// as SQLSTATE 57014, not as a context error. Fanout's error must still say
// it was a deadline, so that WriteError answers 504, whether the deadline is
// the Fanout's or the whole request's (a timeout middleware).
func TestPostgresDeadline(t *testing.T) {
	db := openDB(t, 4)
	p := newPool(t, Config{Workers: 4})
	errs := make(chan error, 2)
	handler := Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if r.URL.Path == "/fanout-deadline" {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
		}
		err := Fanout(ctx, Exec(db, "SELECT pg_sleep(30)"), Exec(db, "SELECT pg_sleep(30)"))
		errs <- err
		WriteError(w, r, err)
	}))
	// A timeout middleware answers the deadline it sets, as chi's
	// middleware.Timeout does (WriteError leaves that answer to it).
	timeout := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/request-deadline" {
			ctx, cancel := context.WithTimeout(r.Context(), 50*time.Millisecond)
			defer func() {
				cancel()
				if ctx.Err() == context.DeadlineExceeded {
					w.WriteHeader(http.StatusGatewayTimeout)
				}
			}()
			r = r.WithContext(ctx)
		}
		handler.ServeHTTP(w, r)
	})
	srv, c := serveHandler(t, timeout)
	// Open the two connections before each path, so that the 50 ms
	// deadline falls on running statements, which is what this test is
	// about, and not on a dial: lib/pq closes a connection whose statement
	// it cancelled, and under -race on a 2-core machine a dial took longer
	// than 50 ms twice (once for each path).
	warm := Exec(db, "SELECT pg_sleep(0.05)")
	for _, path := range []string{"/fanout-deadline", "/request-deadline"} {
		if err := Fanout(handleCtx(t, p), warm, warm); err != nil {
			t.Fatal(err)
		}
		r := get(context.Background(), c, srv.URL+path)
		err := <-errs
		var pqErr *pq.Error
		if !errors.As(err, &pqErr) || pqErr.Code != "57014" || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: Fanout = %v, want a *pq.Error 57014 that also matches DeadlineExceeded", path, err)
		}
		if r.status != http.StatusGatewayTimeout {
			t.Errorf("%s: answered %d %q, want 504", path, r.status, r.body)
		}
	}
}

// TestPQCancelKey: the lib/pq in go.mod keeps the backend's cancel key where
// pqCancelKey reads it, and the key cancels: a CancelRequest sent with it
// ends the connection's running statement.
func TestPQCancelKey(t *testing.T) {
	dsn := os.Getenv("DATABASE_URL")
	db := openDB(t, 1)
	p := newPool(t, Config{Workers: 1})
	odb, err := OpenPostgres(dsn, p)
	if err != nil {
		t.Fatal(err)
	}
	defer odb.Close()
	conn, err := odb.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pid uint32
	var key []byte
	var ok bool
	conn.Raw(func(dc any) error {
		pc, wrapped := dc.(*pqConn)
		if !wrapped {
			t.Fatalf("OpenPostgres's connection is a %T, not a *pqConn: lib/pq cancels its own statements", dc)
		}
		pid, key, ok = pqCancelKey(pc.conn)
		return nil
	})
	var backend uint32
	if err := conn.QueryRowContext(context.Background(), "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	if !ok || pid != backend || len(key) == 0 {
		t.Fatalf("pqCancelKey = %d, %x, %v; backend pid %d", pid, key, ok, backend)
	}
	errc := make(chan error, 1)
	go func() { _, err := conn.ExecContext(context.Background(), "SELECT pg_sleep(30)"); errc <- err }()
	for n := 0; n == 0; time.Sleep(5 * time.Millisecond) {
		if err := db.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`, pid); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := url.Parse(dsn)
	if err := pgwire.SendCancel(context.Background(), (&net.Dialer{}).DialContext, "tcp", u.Host, pid, key); err != nil {
		t.Fatal(err)
	}
	var pqErr *pq.Error
	if err := <-errc; !errors.As(err, &pqErr) || pqErr.Code != "57014" {
		t.Errorf("statement after SendCancel: %v, want 57014", err)
	}
}

// TestTransientErrorsAre503: a query that failed because its server shut
// down or restarted, or its connection broke mid-statement, fails its
// Fanout with an error that matches ErrDBUnavailable, keeps the driver's
// error for errors.As, and is answered 503; any other SQLSTATE, and a
// transient error after the request's context ended, are not.
func TestTransientErrorsAre503(t *testing.T) {
	p := newPool(t, Config{Workers: 2})
	for _, c := range []struct {
		name      string
		err       error
		transient bool
	}{
		{"57P01 admin_shutdown", &pq.Error{Code: "57P01", Message: "terminating connection due to administrator command"}, true},
		{"57P02 crash_shutdown", &pq.Error{Code: "57P02"}, true},
		{"57P03 cannot_connect_now", &pq.Error{Code: "57P03"}, true},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{"unexpected EOF", fmt.Errorf("failed to receive message: %w", io.ErrUnexpectedEOF), true},
		{"bad conn", driver.ErrBadConn, true},
		{"23505 unique_violation", &pq.Error{Code: "23505"}, false},
		{"57014 query_canceled", &pq.Error{Code: "57014"}, false},
		{"plain", errors.New("boom"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := handleCtx(t, p)
			err := Fanout(ctx, Func(noop), Func(func(context.Context) error { return c.err }))
			if got := errors.Is(err, ErrDBUnavailable); got != c.transient {
				t.Errorf("errors.Is(%v, ErrDBUnavailable) = %v, want %v", err, got, c.transient)
			}
			if !errors.Is(err, c.err) {
				t.Errorf("%v does not reach the query's error", err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			want := map[bool]int{true: http.StatusServiceUnavailable, false: http.StatusInternalServerError}[c.transient]
			if got := ErrorStatus(r, err); got != want {
				t.Errorf("ErrorStatus = %d, want %d", got, want)
			}
		})
	}
	// After the context ended, the cause counts, not the broken connection.
	ctx, cancel := context.WithCancel(handleCtx(t, p))
	err := Fanout(ctx, Func(func(ctx context.Context) error {
		cancel()
		<-ctx.Done()
		return io.ErrUnexpectedEOF
	}))
	if errors.Is(err, ErrDBUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("a broken connection after the context ended: %v, want context.Canceled and not ErrDBUnavailable", err)
	}
}
