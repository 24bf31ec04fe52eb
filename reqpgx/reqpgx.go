// Package reqpgx opens PostgreSQL with pgx (github.com/jackc/pgx/v5) for
// reqpool, with the guarantees of reqpool.OpenPostgres: correct results and
// sure cancellation directly and behind PgBouncer in transaction mode, and a
// calm outage. It is a module of its own so that pgx never enters the
// requirements of reqpool's root module.
//
// The *sqlx.DB it returns works with reqpool.Select, Get and Exec unchanged.
package reqpgx

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/internal/pgwire"
)

// Open opens PostgreSQL at dsn (a postgres:// URL or a key=value string)
// with pgx through its database/sql driver, set up for p's Fanouts. It
// returns an error for a DSN it cannot parse, and never panics; it does not
// connect until the first query. Close the *sqlx.DB when done.
//
// What it sets, and why:
//
//   - pgx.QueryExecModeExec, unless the DSN sets default_query_exec_mode:
//     each statement goes out in one round trip as the unnamed statement
//     (Parse, Bind, Describe, Execute, Sync), parameters as text. pgx's
//     default, QueryExecModeCacheStatement, prepares a named statement per
//     statement text, which PgBouncer in transaction mode cannot keep ("
//     prepared statement does not exist"), and which the request-id tag
//     defeats anyway: every tagged text is new, so each would be prepared,
//     used once and evicted. See the README's "Drivers and PgBouncer" for
//     the measured cost.
//   - connect_timeout of reqpool.DefaultConnectTimeout when the DSN has
//     none.
//   - The cancel and client_connection_check_interval of
//     reqpool.OpenPostgres (see its doc): pg_cancel_backend on a direct
//     connection, CancelRequests backing off through PgBouncer, a cut-off
//     after 100 ms that never leaves a statement running, and the
//     connection kept when the cancel landed. pgx's default closes the
//     socket at once, which through PgBouncer leaves the statement
//     running on the server and costs a new connection every time. pgx's
//     own CancelRequests (it sends one whenever it closes a connection
//     after an error, a failed connection attempt included) are refused
//     without dialling: the Canceller has cancelled what needed it.
//   - At most one connection attempt per 250 ms while attempts fail; the
//     others fail at once with reqpool.ErrDBUnavailable.
//   - A TCP connection to itself is reset (no TIME_WAIT left on the
//     server's port) and reported as a dial error.
//   - SetMaxOpenConns and SetMaxIdleConns as reqpool.SizeDB does.
func Open(dsn string, p *reqpool.Pool) (*sqlx.DB, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: reqpgx.Open with a nil *Pool", reqpool.ErrInvalidConfig)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("reqpgx: parse PostgreSQL DSN: %w", err)
	}
	if !strings.Contains(dsn, "default_query_exec_mode") {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = reqpool.DefaultConnectTimeout
	}
	// pgx's dialer, as ParseConfig makes it (a net.Dialer whose Timeout is
	// connect_timeout), and which resets a connection to itself
	// (pgwire.DialControl).
	o := &opener{dial: (&net.Dialer{Timeout: cfg.ConnectTimeout, Control: pgwire.DialControl}).DialContext}
	cfg.DialFunc = o.dialConn
	// Two configurations: with the startup parameter that asks PostgreSQL
	// itself to check the client socket, and without, for PgBouncer (see
	// pgwire.CheckingConnector).
	without := cfg.Copy()
	with := cfg.Copy()
	if _, set := cfg.RuntimeParams[pgwire.CheckParameter]; !set {
		with.RuntimeParams[pgwire.CheckParameter] = pgwire.CheckInterval
	}
	o.chase(with)
	o.chase(without)
	opt := stdlib.OptionResetSession(discardCancelled)
	o.gate = pgwire.NewGate(&pgwire.CheckingConnector{
		With:    connecting{stdlib.GetConnector(*with, opt)},
		Without: connecting{stdlib.GetConnector(*without, opt)},
		Refused: refusedParameter,
	})
	db := sql.OpenDB(o.gate)
	reqpool.SizeDB(db, p)
	return sqlx.NewDb(db, "pgx"), nil
}

// opener is what the connections of one Open share.
type opener struct {
	gate *pgwire.Gate    // set by Open before the first connection
	dial pgconn.DialFunc // pgx's dialer, with pgwire.DialControl
}

// dialConn is the DialFunc of Open's connections: it refuses pgx's own
// CancelRequests and a TCP connection to itself, and wraps the connection's
// socket in a pgwire.Socket of the gate's.
func (o *opener) dialConn(ctx context.Context, network, address string) (net.Conn, error) {
	if err := pgwire.CheckDial(network); err != nil {
		return nil, err
	}
	if ctx.Value(connectingKey{}) == nil {
		// Not a connection attempt of ours (see connecting): pgx's own
		// CancelRequest, from asyncClose. In an outage it doubled the
		// dials of every failed attempt; in a storm of hang-ups, through
		// PgBouncer, each costs the server a process.
		return nil, errOwnCancel
	}
	c, err := o.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if c, err = pgwire.CheckSelfConnect(c); err != nil {
		return nil, err
	}
	return o.gate.NewSocket(c, network, address), nil
}

// chase gives the connections of cfg a chaser as their ctxwatch.Handler,
// and a probe after cfg's own ValidateConnect.
func (o *opener) chase(cfg *pgx.ConnConfig) {
	validate := cfg.ValidateConnect
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		h := &chaser{pc: pc, gate: o.gate, dial: o.dial}
		pc.CustomData()[chaserKey] = h
		return h
	}
	cfg.ValidateConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		if validate != nil {
			if err := validate(ctx, pc); err != nil {
				return err
			}
		}
		return probe(ctx, pc)
	}
}

// connecting is a driver.Connector that marks the context of each of its
// connection attempts (connectingKey), so that Open's DialFunc tells the
// dial of a connection from the dial of a CancelRequest that pgx sends on
// its own: pgx dials both with DialFunc, the latter with a context of its
// own making.
type connecting struct{ driver.Connector }

type connectingKey struct{}

func (c connecting) Connect(ctx context.Context) (driver.Conn, error) {
	return c.Connector.Connect(context.WithValue(ctx, connectingKey{}, true))
}

// errOwnCancel refuses pgx's own CancelRequests (see Open).
var errOwnCancel = errors.New("reqpgx: pgx's own CancelRequest is not sent: reqpool cancels its statements itself")

// chaserKey is the key of a connection's chaser in its pgconn CustomData.
const chaserKey = "reqpool.chaser"

// chaser is the ctxwatch.Handler of one connection: when the context of a
// statement ends, its pgwire.Canceller chases the statement until it ends.
// pgx calls HandleCancel on its watcher goroutine and
// HandleUnwatchAfterCancel once the operation has ended, so the two
// alternate.
type chaser struct {
	pc   *pgconn.PgConn
	gate *pgwire.Gate
	dial pgconn.DialFunc // Open's dialer (opener.dial), for the CancelRequests

	cancel *pgwire.Canceller // made by probe; nil for a connection it did not see
	seq    uint64            // the statement being chased
}

// HandleCancel implements ctxwatch.Handler.
func (h *chaser) HandleCancel(context.Context) {
	if h.cancel == nil { // not probed (not opened by Open): cut the socket, as pgx does
		h.pc.Conn().SetDeadline(time.Now())
		return
	}
	h.seq, _, _ = h.cancel.Start(context.Background())
	h.cancel.Begin(h.seq)
}

// HandleUnwatchAfterCancel implements ctxwatch.Handler. It returns once the
// statement's CancelRequests have been answered, so that none can reach
// the next statement, even on a connection held as a *sql.Conn or *sql.Tx
// (which database/sql does not reset); a connection that was cut off, or
// whose CancelRequest went unanswered, is closed.
func (h *chaser) HandleUnwatchAfterCancel() {
	if h.cancel == nil {
		return
	}
	ok := h.cancel.End(h.seq)
	if ok {
		ok, _ = h.cancel.Settle(context.Background())
	}
	if !ok {
		h.pc.Conn().Close()
	}
}

// discardCancelled is the connections' ResetSession hook: database/sql
// calls it before reusing a connection, and drops one that was cut off.
func discardCancelled(_ context.Context, c *pgx.Conn) error {
	if h, ok := c.PgConn().CustomData()[chaserKey].(*chaser); ok && h.cancel != nil && !h.cancel.Usable() {
		return driver.ErrBadConn
	}
	return nil
}

// refusedParameter reports whether err is the server refusing
// pgwire.CheckParameter at start-up.
func refusedParameter(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && pgwire.RefusedParameter(e.Code, e.Message)
}

// probe runs pgwire.ProbeQuery on a new connection and gives its chaser
// a Canceller. It runs while pgx connects, so that a direct connection's
// first one opens the gate's pg_cancel_backend connection before any
// statement can need it.
func probe(ctx context.Context, pc *pgconn.PgConn) error {
	res := pc.ExecParams(ctx, pgwire.ProbeQuery, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return res.Err
	}
	h, _ := pc.CustomData()[chaserKey].(*chaser)
	sock, _ := pc.Conn().(*pgwire.Socket)
	if h == nil || sock == nil || len(res.Rows) != 1 || len(res.Rows[0]) != 2 {
		return nil
	}
	backend, _ := strconv.ParseInt(string(res.Rows[0][0]), 10, 64)
	// pgx's own dialer, not pc.CancelRequest, which dials
	// pc.Conn().RemoteAddr(): once the socket is cut off, that refuses
	// pgx's own CancelRequest.
	h.cancel = h.gate.NewCanceller(sock, pgwire.DialFunc(h.dial), pgwire.Backend{
		PID: pc.PID(), Key: pc.SecretKey(), ProbePID: backend, Interval: string(res.Rows[0][1]),
	})
	return nil
}
