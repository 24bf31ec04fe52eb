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
	"fmt"
	"net"
	"strings"
	"sync/atomic"
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
//   - A cancel that does not depend on the first CancelRequest landing and
//     does not close the connection first: pgx's default closes the socket
//     at once, which through PgBouncer leaves the statement running on the
//     server. Here a CancelRequest goes out at once and every 25 ms while
//     the statement outlives its context; after 250 ms the socket is cut,
//     so the caller returns whatever the server does. A cancelled
//     connection is never reused.
//   - At most one connection attempt per 250 ms while attempts fail; the
//     others fail at once with reqpool.ErrDBUnavailable.
//   - A TCP connection to itself is closed and reported as a dial error.
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
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return pgwire.CheckSelfConnect(c)
	}
	var gate *pgwire.Gate // set below, before the first connection
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		h := &chaser{pc: pc, gate: gate}
		pc.CustomData()[chaserKey] = h
		return h
	}
	connector := stdlib.GetConnector(*cfg, stdlib.OptionResetSession(discardCancelled))
	gate = pgwire.NewGate(connector)
	db := sql.OpenDB(gate)
	reqpool.SizeDB(db, p)
	return sqlx.NewDb(db, "pgx"), nil
}

// chaserKey is the key of a connection's chaser in its pgconn CustomData.
const chaserKey = "reqpool.chaser"

// chaser is the ctxwatch.Handler of one connection: when the context of a
// statement ends, it sends a CancelRequest and chases the statement with
// pgwire.Chase until it ends.
type chaser struct {
	pc        *pgconn.PgConn
	gate      *pgwire.Gate  // runs the cancels and the chase
	done      chan struct{} // closed when the statement ends; set by HandleCancel
	cancelled atomic.Bool   // a CancelRequest went out: never reuse the connection
}

// HandleCancel implements ctxwatch.Handler. pgx calls it on its watcher
// goroutine; HandleUnwatchAfterCancel follows once the operation has ended.
// A connection can see more than one: an operation that follows the
// cancelled one before database/sql discards the connection is watched
// with the same, ended, context.
func (h *chaser) HandleCancel(context.Context) {
	h.cancelled.Store(true)
	done := make(chan struct{})
	h.done = done
	h.gate.Go(h.cancel)
	h.gate.Chase(done, h.cancel, h.cutOff)
}

// HandleUnwatchAfterCancel implements ctxwatch.Handler. It also closes the
// socket: database/sql resets (and so discards, see discardCancelled) only
// connections it takes from its pool, not one held as a *sql.Conn or
// *sql.Tx, where a CancelRequest still on its way could otherwise reach the
// next statement.
func (h *chaser) HandleUnwatchAfterCancel() {
	close(h.done)
	h.pc.Conn().Close()
}

func (h *chaser) cancel() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = h.pc.CancelRequest(ctx)
}

// cutOff makes the statement's pending read fail at once; pgx then closes
// the connection.
func (h *chaser) cutOff() { h.pc.Conn().SetDeadline(time.Now()) }

// discardCancelled is the connections' ResetSession hook: database/sql
// calls it before reusing a connection, and drops one on which a
// CancelRequest went out, since a late one could cancel the next statement.
func discardCancelled(_ context.Context, c *pgx.Conn) error {
	if h, ok := c.PgConn().CustomData()[chaserKey].(*chaser); ok && h.cancelled.Load() {
		return driver.ErrBadConn
	}
	return nil
}
