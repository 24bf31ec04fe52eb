package main

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// monitorApp is the application_name of the harness's own connections to
// PostgreSQL, so that they can be told apart in pg_stat_activity.
const monitorApp = "reqpool-bench-monitor"

// openMonitor opens dsn with lib/pq for the harness's own queries (setup,
// sampling pg_stat_activity), its connections named monitorApp.
func openMonitor(dsn string) (*sqlx.DB, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse DSN: %w", err)
	}
	cfg.ApplicationName = monitorApp
	c, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, err
	}
	return sqlx.NewDb(sql.OpenDB(c), "postgres"), nil
}

// bouncerAdmin is PgBouncer's admin console: the database "pgbouncer" at
// the address of a PgBouncer URL, as its user (one of admin_users or
// stats_users). It speaks only the simple query protocol, which lib/pq
// uses for a query without arguments.
type bouncerAdmin struct {
	db       *sql.DB
	database string // the pool's database and user, as PGBOUNCER_URL names them
	user     string
}

// openBouncerAdmin opens the admin console of the PgBouncer at url.
func openBouncerAdmin(url string) (*bouncerAdmin, error) {
	cfg, err := pq.NewConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse PGBOUNCER_URL: %w", err)
	}
	a := &bouncerAdmin{database: cfg.Database, user: cfg.User}
	cfg.Database = "pgbouncer"
	c, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, err
	}
	a.db = sql.OpenDB(c)
	a.db.SetMaxOpenConns(1)
	return a, nil
}

func (a *bouncerAdmin) Close() error { return a.db.Close() }

// show runs SHOW what and returns its rows, each a map from column to value.
func (a *bouncerAdmin) show(ctx context.Context, what string) ([]map[string]string, error) {
	rows, err := a.db.QueryContext(ctx, "SHOW "+what)
	if err != nil {
		return nil, fmt.Errorf("PgBouncer SHOW %s: %w", what, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := map[string]string{}
		for i, c := range cols {
			row[c] = vals[i].String
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// setting returns the value of key in SHOW CONFIG.
func (a *bouncerAdmin) setting(ctx context.Context, key string) (string, error) {
	rows, err := a.show(ctx, "CONFIG")
	if err != nil {
		return "", err
	}
	for _, r := range rows {
		if r["key"] == key {
			return r["value"], nil
		}
	}
	return "", fmt.Errorf("PgBouncer SHOW CONFIG: no %s", key)
}

// bouncerPool is the part of a SHOW POOLS row that the scenarios watch.
type bouncerPool struct {
	SvActive, SvIdle, ClWaiting int
	MaxWaitMs                   float64 // how long the oldest waiting client has waited
	Cancels                     int     // cancel requests under way: clients and servers
}

// pool returns the SHOW POOLS row of the database and user of the
// PGBOUNCER_URL the console was opened with.
func (a *bouncerAdmin) pool(ctx context.Context) (bouncerPool, error) {
	rows, err := a.show(ctx, "POOLS")
	if err != nil {
		return bouncerPool{}, err
	}
	for _, r := range rows {
		if r["database"] != a.database || r["user"] != a.user {
			continue
		}
		n := func(col string) int { v, _ := strconv.Atoi(r[col]); return v }
		return bouncerPool{SvActive: n("sv_active"), SvIdle: n("sv_idle"), ClWaiting: n("cl_waiting"),
			MaxWaitMs: 1000*float64(n("maxwait")) + float64(n("maxwait_us"))/1000,
			Cancels:   n("cl_active_cancel_req") + n("cl_waiting_cancel_req") + n("sv_active_cancel") + n("sv_being_canceled")}, nil
	}
	// PgBouncer lists a pool once a client has used it.
	return bouncerPool{}, nil
}

// awaitNoCancels waits until PgBouncer has had no cancel request under way
// for the pool for quiet, or fails after timeout.
//
// PgBouncer 1.18 exits with a FATAL error ("bad client state") when a
// client that sent a cancel request disconnects before PgBouncer has passed
// it on (pgbouncer/pgbouncer#801, fixed in 1.19). A driver sends its
// CancelRequests on goroutines of their own, which can outlive the
// statement, the Fanout and the *sql.DB: a process that exits then, as the
// benchmarks do at their end or a replica on SIGTERM, takes PgBouncer down
// with it. So a scenario waits for this after anything it cancelled through
// PgBouncer.
func (a *bouncerAdmin) awaitNoCancels(ctx context.Context, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var idleSince time.Time
	for {
		pool, err := a.pool(ctx)
		switch {
		case err != nil:
			return err
		case pool.Cancels > 0 && time.Now().After(deadline):
			return fmt.Errorf("PgBouncer still has %d cancel requests under way after %v", pool.Cancels, timeout)
		case pool.Cancels > 0:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
		case time.Since(idleSince) >= quiet:
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serverPIDs returns the process ids, on PostgreSQL, of PgBouncer's server
// connections for the database and user of the PGBOUNCER_URL the console
// was opened with (SHOW SERVERS, remote_pid).
func (a *bouncerAdmin) serverPIDs(ctx context.Context) ([]int64, error) {
	rows, err := a.show(ctx, "SERVERS")
	if err != nil {
		return nil, err
	}
	var pids []int64
	for _, r := range rows {
		if r["database"] != a.database || r["user"] != a.user {
			continue
		}
		pid, err := strconv.ParseInt(r["remote_pid"], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("PgBouncer SHOW SERVERS: remote_pid %q: %w", r["remote_pid"], err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// pgVersions returns the versions of the PostgreSQL at dsn and, when
// bouncer is set, of the PgBouncer there, as "PostgreSQL 15.8" and
// "PgBouncer 1.18.0".
func pgVersions(ctx context.Context, dsn, bouncer string) (server, pgb string, err error) {
	db, err := openMonitor(dsn)
	if err != nil {
		return "", "", err
	}
	defer db.Close()
	if err := db.GetContext(ctx, &server, `SHOW server_version`); err != nil {
		return "", "", fmt.Errorf("PostgreSQL version: %w", err)
	}
	server = "PostgreSQL " + server
	if bouncer == "" {
		return server, "", nil
	}
	a, err := openBouncerAdmin(bouncer)
	if err != nil {
		return "", "", err
	}
	defer a.Close()
	rows, err := a.show(ctx, "VERSION")
	if err != nil || len(rows) == 0 {
		return "", "", fmt.Errorf("PgBouncer version: %v", err)
	}
	return server, rows[0]["version"], nil
}
