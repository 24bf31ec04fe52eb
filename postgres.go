package reqpool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/reqpool/reqpool/internal/pgwire"
)

// ErrDBUnavailable is wrapped in the error of a query that needed a new
// connection from a database opened by OpenPostgres (or reqpgx.Open) while
// the database refused connections: the attempt that failed, or one refused
// at once because another failed less than 250 ms before. errors.As still
// reaches the failure itself (a *net.OpError, a *pq.Error). WriteError
// answers it with 503.
var ErrDBUnavailable = pgwire.ErrUnavailable

// SpareConns is the default of Config.SpareConns: how many connections
// OpenPostgres and reqpgx.Open allow beyond the pool's Workers, for
// statements the application runs outside Fanout.
const SpareConns = 2

// DefaultConnectTimeout bounds the opening of one connection when the DSN
// sets no connect_timeout. Without one a server that accepts TCP and then
// stalls holds every query that needs a new connection.
const DefaultConnectTimeout = 5 * time.Second

// OpenPostgres opens PostgreSQL at dsn (a postgres:// URL or a key=value
// string) with lib/pq, set up for p's Fanouts, directly or through PgBouncer
// in transaction mode. It returns an error for a DSN it cannot parse, and
// never panics; it does not connect until the first query (call PingContext
// to check the server at start-up). Close the *sqlx.DB when done.
//
// What it sets, and why (to do the same on a *sql.DB of your own, see the
// README's "Drivers and PgBouncer"):
//
//   - binary_parameters=yes: a statement with parameters goes out in one
//     round trip (Parse, Bind, Execute, Sync at once) instead of two. Behind
//     PgBouncer in transaction mode the server connection may change between
//     two round trips, and lib/pq then reads another client's results or
//     fails with "unnamed prepared statement does not exist". Prepared
//     statements (db.Prepare) stay unusable through such a PgBouncer.
//   - connect_timeout of DefaultConnectTimeout (5 s) when the DSN has none.
//   - The connector, not sql.Open, so that dialling honours the query's
//     context.
//   - client_connection_check_interval=100ms as a startup parameter,
//     unless the DSN sets it: PostgreSQL 14 and later then end a statement
//     within 100 ms of its client socket closing. A server that refuses
//     it (PgBouncer, older PostgreSQL) is connected to without it from
//     then on, and its connections count as not direct.
//   - Its own cancel instead of lib/pq's (see pqConn): a statement whose
//     context has ended is never sent; one whose context ends while it
//     runs is cancelled at once, on a direct connection with
//     pg_cancel_backend over a connection kept for it (no new process on
//     the server), otherwise with a CancelRequest; again after 50 ms and
//     then backing off, while it still runs; at most 16 CancelRequests
//     out at once per database. After 100 ms the caller is freed: a
//     direct connection is closed (the server ends the statement within
//     100 ms), one through PgBouncer is released but held open, so that
//     PgBouncer keeps the statement cancellable, until the server reports
//     it ended (or 10 s). A connection whose statement ended after a
//     cancel, with every CancelRequest answered, runs the next statement.
//   - At most one connection attempt per 250 ms while attempts fail; the
//     others fail at once with ErrDBUnavailable. A database that is back is
//     in use again within about 250 ms.
//   - A TCP connection to itself (a dial to a local port with no listener
//     may pick that port as its source) is reset, not closed, so that it
//     leaves no TIME_WAIT on the port the server restarts on, and reported
//     as a dial error.
//   - SetMaxOpenConns and SetMaxIdleConns to Workers + Config.SpareConns, so that
//     each worker finds a connection and keeps it between queries.
//
// The request-id tag of Select, Get and Exec costs lib/pq nothing measurable
// (see BENCHMARKS.md): it parses every statement anyway.
func OpenPostgres(dsn string, p *Pool) (*sqlx.DB, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: OpenPostgres with a nil *Pool", ErrInvalidConfig)
	}
	cfg, err := pqConfig(dsn)
	if err != nil {
		return nil, err
	}
	with, without := &pqConnector{cfg: cfg}, &pqConnector{cfg: cfg}
	if _, set := cfg.Runtime[pgwire.CheckParameter]; !set { // else the DSN's own
		with.cfg.Runtime = maps.Clone(cfg.Runtime)
		if with.cfg.Runtime == nil {
			with.cfg.Runtime = make(map[string]string, 1)
		}
		with.cfg.Runtime[pgwire.CheckParameter] = pgwire.CheckInterval
	}
	gate := pgwire.NewGate(&pgwire.CheckingConnector{With: with, Without: without, Refused: pqRefusedParameter})
	with.gate, without.gate = gate, gate
	db := sql.OpenDB(gate)
	SizeDB(db, p)
	return sqlx.NewDb(db, "postgres"), nil
}

// pqConfig parses dsn and makes OpenPostgres's settings on it.
func pqConfig(dsn string) (pq.Config, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return cfg, fmt.Errorf("reqpool: parse PostgreSQL DSN: %w", err)
	}
	cfg.BinaryParameters = true
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if _, err := pq.NewConnectorConfig(cfg); err != nil { // report a bad config now, not at the first query
		return cfg, fmt.Errorf("reqpool: PostgreSQL config: %w", err)
	}
	return cfg, nil
}

// SizeDB sets db's open and idle connection limits for p's Fanouts:
// Workers + Config.SpareConns each. For a db opened by OpenPostgres or
// reqpgx.Open, it also makes a shortage of connections cap p's running
// queries (Stats.Limit) instead of failing them. OpenPostgres and reqpgx.Open call it. With a
// nil db or p it does nothing (OpenPostgres and reqpgx.Open refuse a nil
// p with ErrInvalidConfig).
func SizeDB(db *sql.DB, p *Pool) {
	if db == nil || p == nil {
		return
	}
	n := p.cfg.Workers + p.cfg.SpareConns
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	if g := pgwire.Of(db); g != nil {
		g.OnLimit(p.cfg.Workers, func(n int) { p.sched.SetConnLimit(g, n) })
	}
}

// pqConnector opens lib/pq connections wrapped in a pqConn, whose cancels
// are the gate's (see pqConn). Each connection gets a dialer of its own,
// which keeps its socket for the cut-off.
type pqConnector struct {
	cfg  pq.Config
	gate *pgwire.Gate // the gate around it, which runs the cancels
}

func (c *pqConnector) Driver() driver.Driver { return &pq.Driver{} }

func (c *pqConnector) Connect(ctx context.Context) (driver.Conn, error) {
	pc, err := pq.NewConnectorConfig(c.cfg)
	if err != nil {
		return nil, err
	}
	d := &pqDialer{gate: c.gate}
	d.Dialer.Control = pgwire.DialControl
	pc.Dialer(d)
	conn, err := pc.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return wrapPQ(conn, c.gate, d)
}

// pqDialer is the dialer of one lib/pq connection: it refuses a TCP
// connection to itself and wraps the connection's socket in a
// pgwire.Socket, which it keeps.
type pqDialer struct {
	net.Dialer
	gate *pgwire.Gate
	mu   sync.Mutex     // protects sock
	sock *pgwire.Socket // the socket of the last connection attempt
}

func (d *pqDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d *pqDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (d *pqDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if c, err = pgwire.CheckSelfConnect(c); err != nil {
		return nil, err
	}
	sock := d.gate.NewSocket(c, network, address)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sock = sock
	return sock, nil
}

// socket returns the socket of the connection just opened.
func (d *pqDialer) socket() *pgwire.Socket {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sock
}

// pqRefusedParameter reports whether err is the server refusing
// pgwire.CheckParameter at start-up.
func pqRefusedParameter(err error) bool {
	var e *pq.Error
	return errors.As(err, &e) && pgwire.RefusedParameter(string(e.Code), e.Message)
}

// CancelStats counts the cancels of a database opened by OpenPostgres or
// reqpgx.Open since it was opened: the statements whose context ended
// while they ran, the CancelRequests sent for them (each one a new
// connection to the server, which PostgreSQL forks a process for), the
// connections cut off because a statement outlived its context by
// 250 ms, and the connections kept for the next statement after a cancel.
type CancelStats struct {
	Statements int64
	Requests   int64
	Signals    int64
	CutOffs    int64
	Reused     int64
}

// Cancels returns db's CancelStats, or zero ones if db was not opened by
// OpenPostgres or reqpgx.Open.
func Cancels(db *sql.DB) CancelStats {
	g := pgwire.Of(db)
	if g == nil {
		return CancelStats{}
	}
	s := g.CancelStats()
	return CancelStats(s)
}
