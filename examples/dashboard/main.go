// Command dashboard is a small service that shows reqpool with PostgreSQL:
// a dashboard endpoint that runs 5 queries in parallel on the process's one
// bounded pool, and a deliberately slow report whose queries are cancelled
// when its client hangs up. See README.md.
//
// Usage:
//
//	DATABASE_URL=postgres://... dashboard [-addr 127.0.0.1:8080] [-workers 16] [-init]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/examples/dashboard/store"
)

const (
	// shutdownTimeout bounds a graceful shutdown: past it, the queries still
	// running are cancelled.
	shutdownTimeout = 10 * time.Second

	// schemaTimeout bounds loading the schema and the seed data, which takes
	// about 8 s on a 2-core machine.
	schemaTimeout = 2 * time.Minute
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}

// run parses args, opens the database, loads the schema when needed, and
// serves until SIGINT or SIGTERM, then shuts down gracefully.
func run(args []string) error {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	// Not os.Getenv as the flag's default: -h would print it, password and all.
	dsn := fs.String("db", "", "PostgreSQL URL or key=value DSN (default $DATABASE_URL)")
	workers := fs.Int("workers", reqpool.DefaultWorkers, "queries that run at once, process-wide; also the size of the connection pool")
	forceInit := fs.Bool("init", false, "run schema.sql even though the tables exist (it creates what is missing and seeds empty tables)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *dsn == "" {
		*dsn = os.Getenv("DATABASE_URL")
	}
	if *dsn == "" {
		return errors.New("no database: set DATABASE_URL or -db")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	// The first SIGINT or SIGTERM starts a graceful shutdown; stop, called
	// once it has begun, restores the default, so a second Ctrl-C kills the
	// process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pool, err := reqpool.New(reqpool.Config{Workers: *workers})
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, *dsn, pool)
	if err != nil {
		pool.Shutdown(context.Background()) // idle: nothing was served
		return err
	}
	defer db.Close()

	start := time.Now()
	loadCtx, cancel := context.WithTimeout(ctx, schemaTimeout)
	loaded, err := store.Ensure(loadCtx, db, *forceInit)
	cancel()
	if err != nil {
		return err
	}
	if loaded {
		log.Info("schema loaded", "took", time.Since(start).Round(time.Millisecond))
	}

	a := newApp(db, pool, log)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		a.Shutdown(context.Background()) // idle: nothing was served
		return err
	}
	srv := &http.Server{
		Handler: a.Handler(),
		// Bounds the time a client may take to send its headers, which
		// nothing else bounds. There is no WriteTimeout on purpose: it would
		// cut off a report that sleeps 60 s, and it does not cancel the
		// request's context anyway; the handlers set their own deadlines.
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	printBanner(os.Stdout, "http://"+ln.Addr().String(), a.pool.Config().Workers, psqlTarget(*dsn))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var errs []error
	var serveErr error // what Serve returned, once received; it is never nil
	select {
	case serveErr = <-served:
		errs = append(errs, fmt.Errorf("serve: %w", serveErr)) // shut down the rest all the same
	case <-ctx.Done():
		stop()
		log.Info("shutting down; press Ctrl-C again to stop at once", "timeout", shutdownTimeout)
	}

	// The server first, so that no handler is left to call Fanout, then the
	// pool. When the deadline passes, srv.Shutdown gives up waiting, and
	// pool.Shutdown, its context done, cancels whatever still runs: no query
	// outlives the process. The handlers so cut off answer 503, as far as
	// they get to before the process exits.
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("http server shutdown: %w", err))
	}
	if err := a.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("queries still running after %v were cancelled: %w", shutdownTimeout, err))
	}
	if serveErr == nil {
		<-served // http.ErrServerClosed, now that Shutdown was called
	}
	err = errors.Join(errs...)
	if err == nil {
		log.Info("stopped")
	}
	return err // db.Close runs deferred, once nothing uses it
}

// psqlTarget returns dsn as an argument for psql in the banner: quoted, with
// any password redacted. A key=value DSN is not shown; the banner names
// $DATABASE_URL instead.
func psqlTarget(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		return "'" + u.Redacted() + "'"
	}
	return `"$DATABASE_URL"`
}

// printBanner prints where the service listens and a few commands to try.
// db is the database for psql, as psqlTarget gives it.
func printBanner(w io.Writer, base string, workers int, db string) {
	fmt.Fprintf(w, `dashboard listening on %[1]s (%[2]d workers)

Try:
  curl -s %[1]s/orgs/1/dashboard
  curl -si -H 'X-Request-ID: demo-1' %[1]s/orgs/1/dashboard      # the id is echoed, and tags the SQL
  curl -s '%[1]s/orgs/1/report?sleep=30' -H 'X-Request-ID: slow-1'
      # a slow report: press Ctrl-C while it runs, and its queries leave pg_stat_activity
  curl -si '%[1]s/orgs/1/report?sleep=30&timeout=2'              # cancelled after 2 s: 504
  curl -s %[1]s/stats
  curl -s %[1]s/healthz

Watch the running queries, tagged with their request id, from another terminal:
  psql %[3]s
  => select pid, now() - query_start as running, query from pg_stat_activity where state = 'active' and query like '%%request_id%%' and pid <> pg_backend_pid() \watch 0.5

`, base, workers, db)
}
