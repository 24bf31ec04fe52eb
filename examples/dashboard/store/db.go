// Package store is the database side of the dashboard example: opening
// PostgreSQL, loading the schema and seed data, and the dashboard's
// statements. The benchmarks use it too, so that every pool they compare
// runs the same SQL on the same data.
package store

import (
	"context"
	"database/sql/driver"
	_ "embed"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/reqpool/reqpool"
)

// schemaSQL creates the tables and seeds them; see schema.sql.
//
//go:embed schema.sql
var schemaSQL string

// Open opens PostgreSQL at dsn for pool's Fanouts with reqpool.OpenPostgres
// (lib/pq, set up for PgBouncer in transaction mode, sure cancellation and
// a calm outage), and checks that the server answers.
func Open(ctx context.Context, dsn string, pool *reqpool.Pool) (*sqlx.DB, error) {
	db, err := reqpool.OpenPostgres(dsn, pool)
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to the database: %w", err)
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
