// Package store is the database side of the dashboard example: opening
// PostgreSQL, loading the schema and seed data, and the dashboard's
// statements. The benchmarks use it too, so that every pool they compare
// runs the same SQL on the same data.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// schemaSQL creates the tables and seeds them; see schema.sql.
//
//go:embed schema.sql
var schemaSQL string

// defaultConnectTimeout bounds how long opening one connection may take when
// the DSN (or PGCONNECT_TIMEOUT) sets no connect_timeout. Without one, lib/pq
// waits for the handshake forever: a server that accepts TCP and then hangs
// would hang every query that needs a new connection.
const defaultConnectTimeout = 5 * time.Second

// connConfig parses dsn, a URL (postgres://...) or key=value connection
// string, and sets connect_timeout to defaultConnectTimeout when the DSN and
// the environment leave it unset.
func connConfig(dsn string) (pq.Config, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return pq.Config{}, err
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	return cfg, nil
}

// Open opens a connection pool for dsn and checks that the server answers.
//
// It goes through a pq.Connector and sql.OpenDB rather than sql.Open: the
// connector dials with the context of the query that needs the connection,
// so a request that is cancelled while connecting stops waiting at once.
// Editing the parsed pq.Config rather than the DSN text adds the connect
// timeout without having to parse and rebuild both DSN syntaxes by hand.
func Open(ctx context.Context, dsn string) (*sqlx.DB, error) {
	cfg, err := connConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	connector, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, err
	}
	db := sqlx.NewDb(sql.OpenDB(connector), "postgres")
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s:%d/%s: %w", cfg.Host, cfg.Port, cfg.Database, err)
	}
	return db, nil
}

// Ensure loads schema.sql (see loadSchema) when force is set, when one
// of the tables is missing, or when orgs is empty, and reports whether it did.
// Otherwise it only costs two quick queries, so the app can call it on every
// start.
func Ensure(ctx context.Context, db *sqlx.DB, force bool) (loaded bool, err error) {
	if !force {
		var tables int
		err := db.GetContext(ctx, &tables, `SELECT num_nonnulls(to_regclass('orgs'), to_regclass('users'), to_regclass('orders'), to_regclass('events'))`)
		if err != nil {
			return false, fmt.Errorf("look for the tables: %w", err)
		}
		if tables == 4 {
			var seeded bool
			if err := db.GetContext(ctx, &seeded, `SELECT EXISTS (SELECT FROM orgs)`); err != nil {
				return false, fmt.Errorf("look for the seed data: %w", err)
			}
			if seeded {
				return false, nil
			}
		}
	}
	return true, loadSchema(ctx, db)
}

// loadSchema runs schema.sql, which creates whatever is missing and seeds
// empty tables, then VACUUM (ANALYZE) on the tables.
func loadSchema(ctx context.Context, db *sqlx.DB) error {
	// One connection for the whole load: the script opens and commits its
	// own transaction, and must not be split over connections.
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()

	// Without arguments, lib/pq sends the script as one simple-protocol
	// query, which may hold many statements.
	if _, err := conn.ExecContext(ctx, schemaSQL); err != nil {
		// The script's transaction may still be open, aborted: discard the
		// connection rather than hand it back to the pool in that state.
		// Returning driver.ErrBadConn from Raw is how database/sql is told.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return fmt.Errorf("run schema.sql: %w", err)
	}
	// Statistics for the planner, and a visibility map so that counts can use
	// index-only scans at once, rather than whenever autovacuum comes round
	// (which would also change the timings of a benchmark under way). VACUUM
	// refuses to run in a transaction, hence not in schema.sql.
	if _, err := conn.ExecContext(ctx, `VACUUM (ANALYZE) orgs, users, orders, events`); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	return nil
}
