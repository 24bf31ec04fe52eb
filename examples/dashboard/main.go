// Command dashboard is a small service that shows reqpool with PostgreSQL:
// a dashboard endpoint that runs 5 queries in parallel on the process's one
// bounded pool, a deliberately slow report whose queries are cancelled when
// its client hangs up, Prometheus metrics, the pool's debug page on an
// internal listener, Server-Timing headers and, with -trace, OpenTelemetry
// traces. The pool has two priority classes, interactive and reports, each
// org's reports a flow of their own (see classes.go). See README.md.
//
// Usage:
//
//	DATABASE_URL=postgres://... dashboard [-addr 127.0.0.1:8080] [-debug-addr 127.0.0.1:0] [-workers 16] [-classes=true] [-interactive-share 4] [-report-share 1] [-report-queue 16] [-server-timing=true] [-trace] [-init]
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
	"go.opentelemetry.io/otel/trace"
)

const (
	// shutdownTimeout bounds a graceful shutdown: past it, the queries still
	// running are cancelled.
	shutdownTimeout = 10 * time.Second

	// debugShutdownTimeout bounds the debug listener's shutdown, which comes
	// last: its pages render in microseconds.
	debugShutdownTimeout = time.Second

	// traceFlushTimeout bounds writing the last spans on exit, with -trace.
	traceFlushTimeout = 5 * time.Second

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
func run(args []string) (err error) {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	// A free port on loopback by default: the banner prints it, and several
	// processes on one machine (the benchmarks start three) do not collide.
	debugAddr := fs.String("debug-addr", "127.0.0.1:0", "internal address for /debug/reqpool, which shows request ids: keep it private (empty: no debug listener)")
	// Not os.Getenv as the flag's default: -h would print it, password and all.
	dsn := fs.String("db", "", "PostgreSQL URL or key=value DSN (default $DATABASE_URL)")
	po := defaultPoolOptions
	fs.IntVar(&po.Workers, "workers", po.Workers, "queries that run at once, process-wide; also the size of the connection pool")
	fs.BoolVar(&po.Classes, "classes", po.Classes, "give reports a class of their own, with a flow per org, beside the interactive class (dashboards, /stats); -classes=false: one class and one queue for all requests")
	fs.IntVar(&po.InteractiveShare, "interactive-share", po.InteractiveShare, "the interactive class's share of the workers while reports wait too (0: 1)")
	fs.IntVar(&po.ReportShare, "report-share", po.ReportShare, "the reports class's share of the workers while interactive requests wait too (0: 1)")
	fs.IntVar(&po.ReportQueue, "report-queue", po.ReportQueue, fmt.Sprintf("report queries that may wait at once, %d a report; past it a report gets 503 (0: %d, as the interactive class)", reportQueries, reqpool.DefaultQueueSize))
	fs.BoolVar(&po.ServerTiming, "server-timing", po.ServerTiming, "add a Server-Timing header to each response: how long its queries waited and ran")
	traceOn := fs.Bool("trace", false, "trace each request and its queries with OpenTelemetry, and print the spans to stderr as JSON, one a line")
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

	// With -trace, the spans go to stderr. flushTraces shuts the provider
	// down, which writes the last of them: after the pool has shut down, or
	// on the way out of an early return.
	var tp trace.TracerProvider  // nil: no tracing
	var flushTraces func() error // nil: nothing to flush
	if *traceOn {
		sdk, err := newTracerProvider(os.Stderr)
		if err != nil {
			return fmt.Errorf("tracing: %w", err)
		}
		tp = sdk
		flushTraces = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), traceFlushTimeout)
			defer cancel()
			if err := sdk.Shutdown(ctx); err != nil {
				return fmt.Errorf("flush traces: %w", err)
			}
			return nil
		}
		defer func() {
			if flushTraces != nil { // an early return
				err = errors.Join(err, flushTraces())
			}
		}()
	}

	pool, err := newPool(po)
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
		pool.Shutdown(context.Background()) // idle: nothing was served
		return err
	}
	if loaded {
		log.Info("schema loaded", "took", time.Since(start).Round(time.Millisecond))
	}

	a, err := newApp(db, pool, log, tp)
	if err != nil {
		pool.Shutdown(context.Background()) // idle: nothing was served
		return err
	}
	servers, err := listen(a, log, *addr, *debugAddr)
	if err != nil {
		a.Shutdown(context.Background()) // idle: nothing was served
		return err
	}
	b := banner{URL: servers[0].url, Workers: a.pool.Config().Workers, Classes: a.pool.Config().Classes, QueueSize: a.pool.Config().QueueSize, ServerTiming: po.ServerTiming, Trace: *traceOn, PSQL: psqlTarget(*dsn)}
	if len(servers) > 1 {
		b.DebugURL = servers[1].url
	}
	printBanner(os.Stdout, b)

	served := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			err := s.Serve(s.ln)
			if !errors.Is(err, http.ErrServerClosed) {
				err = fmt.Errorf("serve %s: %w", s.url, err)
			}
			served <- err
		}()
	}
	pending := len(servers) // Serve calls that have not returned
	var errs []error
	select {
	case err := <-served: // never nil: a listener failed
		pending--
		errs = append(errs, err) // shut down the rest all the same
	case <-ctx.Done():
		stop()
		log.Info("shutting down; press Ctrl-C again to stop at once", "timeout", shutdownTimeout)
	}

	// The server first, so that no handler is left to call Fanout, then the
	// pool. When the deadline passes, srv.Shutdown gives up waiting, and
	// pool.Shutdown, its context done, cancels whatever still runs: no query
	// outlives the process. The handlers so cut off answer 503, as far as
	// they get to before the process exits. The debug listener goes last,
	// so that its page shows the pool draining.
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := servers[0].Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("http server shutdown: %w", err))
	}
	if err := a.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("queries still running after %v were cancelled: %w", shutdownTimeout, err))
	}
	for _, s := range servers[1:] {
		dctx, cancel := context.WithTimeout(context.Background(), debugShutdownTimeout)
		if err := s.Shutdown(dctx); err != nil {
			errs = append(errs, fmt.Errorf("debug server shutdown: %w", err))
		}
		cancel()
	}
	for range pending {
		// http.ErrServerClosed, now that Shutdown was called, unless a
		// listener failed at the same moment.
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if flushTraces != nil {
		errs = append(errs, flushTraces())
		flushTraces = nil
	}
	err = errors.Join(errs...)
	if err == nil {
		log.Info("stopped")
	}
	return err // db.Close runs deferred, once nothing uses it
}

// server is an http.Server with its listener and its base URL.
type server struct {
	*http.Server
	ln  net.Listener
	url string // http://host:port
}

// listen listens on addr for a's routes and, unless debugAddr is empty, on
// debugAddr for its debug page. It returns the main server first. A debug
// listener off loopback is allowed, with a warning: the page shows request
// ids.
func listen(a *app, log *slog.Logger, addr, debugAddr string) ([]server, error) {
	newServer := func(addr string, h http.Handler) (server, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return server{}, err
		}
		return server{
			Server: &http.Server{
				Handler: h,
				// Bounds the time a client may take to send its headers,
				// which nothing else bounds. There is no WriteTimeout on
				// purpose: it would cut off a report that sleeps 60 s, and
				// it does not cancel the request's context anyway; the
				// handlers set their own deadlines.
				ReadHeaderTimeout: 5 * time.Second,
				IdleTimeout:       2 * time.Minute,
				ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			},
			ln:  ln,
			url: "http://" + ln.Addr().String(),
		}, nil
	}
	svc, err := newServer(addr, a.Handler())
	if err != nil {
		return nil, err
	}
	if debugAddr == "" {
		return []server{svc}, nil
	}
	debug, err := newServer(debugAddr, a.DebugHandler())
	if err != nil {
		svc.ln.Close()
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	if tcp, ok := debug.ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		log.Warn("the debug listener is not on loopback: /debug/reqpool shows request ids and what each request does; keep it from the public", "addr", debug.ln.Addr())
	}
	return []server{svc, debug}, nil
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

// banner is what printBanner prints.
type banner struct {
	URL          string // the service's base URL
	DebugURL     string // the debug listener's base URL; empty when it is off
	Workers      int
	Classes      []reqpool.Class // the pool's, after defaults; empty: one class
	QueueSize    int             // the pool's Config.QueueSize, after defaults
	ServerTiming bool            // whether responses carry Server-Timing
	Trace        bool            // whether spans go to stderr
	PSQL         string          // the database, for psql, as psqlTarget gives it
}

// watchQuery lists the running statements tagged with a request id, every
// half second, for the banner's psql line: \watch needs psql's input, not
// -c, which runs a query once.
const watchQuery = `select pid, now() - query_start as running, query from pg_stat_activity where state = 'active' and query like '%request_id%' and pid <> pg_backend_pid() \watch 0.5`

// printBanner prints where the service listens and a few commands to try,
// each a line that runs as pasted into a shell (TestMakeDemoWithoutTerminal
// runs them).
func printBanner(w io.Writer, b banner) {
	var timing, debug, traces string
	classes := fmt.Sprintf("One class and one queue (%d queries) for all requests.\n", b.QueueSize)
	if len(b.Classes) > 0 {
		classes = "Classes (share: of the workers, while several classes have queries waiting; queue: queries that may wait):\n"
		for _, k := range b.Classes {
			var what string
			switch k.Name {
			case interactiveClass:
				what = "dashboards, /stats: each request a flow of its own"
			case reportsClass:
				what = "GET /orgs/{id}/report: a flow per org; past the queue, 503"
			}
			classes += fmt.Sprintf("  %-12s share %-3d queue %-6d %s\n", k.Name, k.Share, k.QueueSize, what)
		}
	}
	if b.ServerTiming {
		timing = fmt.Sprintf(`
  curl -si %s/orgs/1/dashboard | grep -i '^server-timing'     # its queries' wall time, and their wait and run summed; devtools show them`, b.URL)
	}
	if b.DebugURL != "" {
		debug = fmt.Sprintf(`
The pool's live page, on the internal listener (it shows request ids: keep it private):
  %[1]s/debug/reqpool      # in a browser; it refreshes every 2 s
  curl -s '%[1]s/debug/reqpool?format=json'
`, b.DebugURL)
	}
	if b.Trace {
		traces = `
Traces: each request's span and its queries' reqpool.query spans go to stderr, as JSON, one span a line.
`
	}
	fmt.Fprintf(w, `dashboard listening on %[1]s (%[2]d workers)
%[7]s
Try:
  curl -s %[1]s/orgs/1/dashboard
  curl -si -H 'X-Request-ID: demo-1' %[1]s/orgs/1/dashboard      # the id is echoed, and tags the SQL%[4]s
  curl -s '%[1]s/orgs/1/report?sleep=30' -H 'X-Request-ID: slow-1'
      # a slow report: press Ctrl-C while it runs, and its queries leave pg_stat_activity
  curl -si '%[1]s/orgs/1/report?sleep=30&timeout=2'              # cancelled after 2 s: 504
  curl -s %[1]s/stats
  curl -s %[1]s/metrics | grep '^reqpool_'                       # Prometheus metrics
  curl -s %[1]s/healthz
%[5]s%[6]s
Watch the running queries, tagged with their request id, from another terminal (Ctrl-C stops it):
  echo "%[8]s" | psql %[3]s

`, b.URL, b.Workers, b.PSQL, timing, debug, traces, classes, watchQuery)
}
