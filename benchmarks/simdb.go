package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
	"time"
)

// Database makes the tasks of the HTTP scenarios: task i of a request is a
// query of duration d, recorded in rec (rec.call when called, rec.begin when
// the query reaches a connection, rec.end when it returns). simDB is the
// simulated one; scenario 6 (PostgreSQL) plugs in a real server, with
// `SELECT pg_sleep(d)` for the query.
type Database interface {
	Task(rec *recorder, req int, d time.Duration) Task
	Close() error
}

// simDB is a simulated database behind a real database/sql.DB. Its only
// statement sleeps for the duration given as its argument, or until its
// context is done. Going through database/sql, rather than sleeping in the
// task, keeps two facts of real queries that decide the results:
//
//   - The *sql.DB has SetMaxOpenConns(Workers), as doc.go advises. That is
//     the process-wide bound of a contender that has none of its own (an
//     errgroup per request): its surplus queries wait for a connection, and
//     database/sql hands freed connections to its waiters in random order.
//     For the bounded contenders no query ever waits there.
//   - A query whose context is already done never reaches the database:
//     database/sql checks the context before taking a connection. So a task
//     that a library calls after the client hung up costs a call, not a
//     query; the recorder counts both.
type simDB struct {
	db *sql.DB
}

// sleepQuery is the simulated database's one statement; its argument is the
// duration in nanoseconds.
const sleepQuery = "SLEEP"

// newSimDB opens a simulated database with at most conns connections.
func newSimDB(conns int) *simDB {
	db := sql.OpenDB(simConnector{})
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return &simDB{db: db}
}

// Close closes the database.
func (s *simDB) Close() error { return s.db.Close() }

// Task returns a simulated query of duration d, recorded in rec as task i of
// request req.
func (s *simDB) Task(rec *recorder, req int, d time.Duration) Task {
	return func(ctx context.Context) error {
		ev := rec.call(req, ctx.Err() != nil)
		_, err := s.db.ExecContext(context.WithValue(ctx, eventKey{}, ev), sleepQuery, int64(d))
		rec.end(ev)
		return err
	}
}

// recorder collects the life of every task of one run: when it was called,
// when its query began on a connection (if it did), and when it returned.
// Times are offsets from the recorder's origin, on the monotonic clock.
type recorder struct {
	origin time.Time
	mu     sync.Mutex
	events []*taskEvent
}

// taskEvent is one task's record.
type taskEvent struct {
	Req           int           // the request the task belongs to
	Called        time.Duration // when the library called the task
	Began         time.Duration // when its query began on a connection; -1 if it never did
	CtxDoneAtBeg  bool          // its context was already done when the query began
	Ended         time.Duration // when the task returned
	CtxDoneAtCall bool          // its context was already done when it was called

	rec *recorder // the recorder the event belongs to, for the driver
}

func newRecorder() *recorder { return &recorder{origin: time.Now()} }

// since returns the offset of now from the recorder's origin.
func (r *recorder) since() time.Duration { return time.Since(r.origin) }

func (r *recorder) call(req int, ctxDone bool) *taskEvent {
	ev := &taskEvent{Req: req, Called: r.since(), Began: -1, CtxDoneAtCall: ctxDone, rec: r}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	return ev
}

func (r *recorder) begin(ev *taskEvent, ctxDone bool) {
	t := r.since()
	r.mu.Lock()
	ev.Began, ev.CtxDoneAtBeg = t, ctxDone
	r.mu.Unlock()
}

func (r *recorder) end(ev *taskEvent) {
	t := r.since()
	r.mu.Lock()
	ev.Ended = t
	r.mu.Unlock()
}

// snapshot returns a copy of the events recorded so far.
func (r *recorder) snapshot() []taskEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]taskEvent, len(r.events))
	for i, ev := range r.events {
		out[i] = *ev
	}
	return out
}

// eventKey carries a task's *taskEvent (and so its recorder) down to the
// driver, which marks when the query began.
type eventKey struct{}

// ---- the database/sql driver ----

// simConnector opens simulated connections; it is used with sql.OpenDB so
// that no driver name is registered globally.
type simConnector struct{}

func (simConnector) Connect(context.Context) (driver.Conn, error) { return simConn{}, nil }
func (simConnector) Driver() driver.Driver                        { return simDriver{} }

type simDriver struct{}

func (simDriver) Open(string) (driver.Conn, error) { return simConn{}, nil }

// simConn is one simulated connection. It supports ExecContext only.
type simConn struct{}

var errUnsupported = errors.New("simdb: only ExecContext(SLEEP, ns) is supported")

func (simConn) Prepare(string) (driver.Stmt, error) { return nil, errUnsupported }
func (simConn) Close() error                        { return nil }
func (simConn) Begin() (driver.Tx, error)           { return nil, errUnsupported }

// ExecContext runs the sleep statement: it records when the query began and
// sleeps for its argument or until ctx is done, like a server that honours
// a cancel request.
func (simConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if query != sleepQuery || len(args) != 1 {
		return nil, errUnsupported
	}
	ns, ok := args[0].Value.(int64)
	if !ok {
		return nil, errUnsupported
	}
	if ev, ok := ctx.Value(eventKey{}).(*taskEvent); ok {
		ev.rec.begin(ev, ctx.Err() != nil)
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
		return driver.RowsAffected(0), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
