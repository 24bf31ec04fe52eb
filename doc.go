// Package reqpool runs the parallel database queries of HTTP handlers on one
// bounded, fair pool per process, and cancels them when the client goes away.
//
// A handler that needs five queries runs them in parallel. One pool per
// request puts no bound on the process; one global FIFO pool makes a request
// of 2 queries wait behind all 160 of another, and neither stops the work of
// a client who has disconnected. reqpool gives the process one Pool, a
// Middleware that hands each request a Handle onto it, and Fanout:
//
//	pool, err := reqpool.New(reqpool.Config{Workers: 16})
//	...
//	http.ListenAndServe(addr, reqpool.Middleware(pool)(mux))
//
//	func dashboard(w http.ResponseWriter, r *http.Request) {
//		var users, orders int
//		err := reqpool.Fanout(r.Context(),
//			reqpool.Func(func(ctx context.Context) error { return countUsers(ctx, &users) }),
//			reqpool.Func(func(ctx context.Context) error { return countOrders(ctx, &orders) }),
//		)
//		if err != nil {
//			reqpool.WriteError(w, r, err) // 503 on overload, 504 on deadline, 500 otherwise
//			return
//		}
//		...
//	}
//
// # Guarantees
//
//   - At most Config.Workers queries execute at once, process-wide, and at
//     most Config.QueueSize wait. A Fanout that does not fit is refused at
//     once and as a whole with ErrQueueFull.
//   - Requests are scheduled fewest-remaining-queries first, with aging, so
//     small requests do not queue behind large ones and large ones do not
//     starve (see Pool).
//   - Optionally, priority classes (Config.Classes) divide the workers by
//     share while they compete, each with its own queue, so that a flood of
//     one class is refused in that class alone; and flows (a tenant, a user,
//     named by Config.Classify) share their class equally, however many
//     requests each sends. A class alone still uses every worker.
//   - The first failing query cancels its siblings; Fanout returns it as a
//     *QueryError. A panic becomes a *PanicError.
//   - When the request's context ends, its queued queries are dropped at once
//     and its executing ones see their context done. When the handler
//     returns, nothing of the request is queued or executing.
//   - A query may fan out again with its own context without risk of
//     deadlock: the nested queries run in its slot.
//
// # Cost
//
// A request that never fans out pays for its handle alone: 3 allocations
// (the handle with its context, the request id, the request's shallow
// copy) and no state shared with other requests, about what chi's
// middleware.RequestID costs (0.99–1.05× in one run, in 3 allocations
// against 6); the handle registers with the scheduler at its first Fanout.
// A new request through Middleware with a Fanout of 8 no-op queries costs
// 0.64× a global semaphore.Weighted with an errgroup serially and 0.88× from
// GOMAXPROCS goroutines, in 10 allocations through Middleware
// (BenchmarkRequest, impl=middleware+fanout8) against the semaphore's 20;
// a Fanout of 8 on a handle that has fanned out before, about 600–720 ns
// and 3 allocations on a 2-core machine (BenchmarkFanout8; BENCHMARKS.md,
// scenario 1, has pond and ants). A request in a named flow of a pool with
// classes costs about 1.13× that, and 2 allocations more when its flow is
// new (BenchmarkRequest, impl=reqpool-classes). The caller runs its own queries while a
// slot is free, so a Fanout on an idle pool hands nothing to another
// goroutine that it need not.
//
// # SQL
//
// Select, Get, Exec and ExecResult wrap sqlx for the common case, on a
// database opened for the pool (see Drivers and PgBouncer):
//
//	db, err := reqpool.OpenPostgres(os.Getenv("DATABASE_URL"), pool)
//	...
//	var users []User
//	var open int
//	err := reqpool.Fanout(r.Context(),
//		reqpool.Select(db, &users, `SELECT id, name FROM users WHERE org_id = $1`, org),
//		reqpool.Get(db, &open, `SELECT count(*) FROM orders WHERE org_id = $1 AND state = 'open'`, org),
//	)
//
// Errors keep their type: errors.As(err, &pqErr) reaches a *pq.Error, and
// errors.Is(err, sql.ErrNoRows) a Get that found nothing; the *QueryError
// around them says which query failed. Each statement carries the request id
// as a sqlcommenter comment, /*request_id='…'*/, so that the statement shows
// in pg_stat_activity and the server's logs with its HTTP request id (see
// Config.DisableSQLComment). A *sqlx.Tx is one connection, which runs one
// statement at a time: two queries of one Fanout on the same transaction are
// refused with ErrSharedConn.
//
// # Drivers and PgBouncer
//
// Open the database with OpenPostgres (lib/pq) or, in the module
// github.com/reqpool/reqpool/reqpgx, reqpgx.Open (pgx): both are set up so
// that Fanout's results are right and its cancellations sure, directly and
// behind PgBouncer in transaction mode, and so that an outage stays calm.
// Their doc comments list each setting and why; in short:
//
//   - Every statement goes out in one round trip, as the unnamed statement
//     (lib/pq binary_parameters=yes; pgx QueryExecModeExec). Behind
//     PgBouncer in transaction mode, the server connection can change
//     between two round trips: plain lib/pq then returns other statements'
//     results (2,163 of 2,400 requests in our test), and pgx's default
//     fails with "prepared statement does not exist". Named prepared
//     statements (db.Prepare, pgx's statement cache) cannot cross such a
//     PgBouncer at all.
//   - A cancel that lands, and costs the server little, however many
//     clients hang up at once. PostgreSQL drops a cancel that reaches a
//     backend before it executes the statement, and the drivers then wait
//     for the statement to end; and every CancelRequest costs the server a
//     forked process. The openers never send a statement whose context has
//     ended; cancel with pg_cancel_backend over a connection kept for it
//     when they reach PostgreSQL itself, and with CancelRequests through
//     PgBouncer; send again, backing off, while the statement runs; free
//     the caller after 100 ms without leaving the statement running; and
//     keep the connection when the cancel landed. The CancelRequests go in
//     the clear, as lib/pq's own do; a PgBouncer that demands TLS from its
//     clients refuses them, and only the cut-off remains. Cancels counts
//     them.
//   - At most one connection attempt per 250 ms while attempts fail; the
//     others fail at once with ErrDBUnavailable, which WriteError answers
//     with 503. Plain drivers dial on every query: 6,000–13,000 attempts a
//     second from 16 callers in our test.
//   - DB.Close waits for the openers' own cancels in flight: PgBouncer
//     before 1.19 (Debian 12 ships 1.18) exits when a client disconnects
//     while its CancelRequest is being passed on (pgbouncer#801). Close the
//     database before the process exits, and prefer PgBouncer 1.19 or later.
//   - Statements prepared with db.Prepare are not for these databases
//     behind PgBouncer in transaction mode, which cannot keep them.
//   - The request-id tag costs nothing measurable with either opener: both
//     parse every statement anyway. It costs pgx's default mode about 60%,
//     since every tagged text is new to its statement cache; see
//     BENCHMARKS.md.
//
// With a *sql.DB of your own, make the settings that are settings: lib/pq
// with binary_parameters=yes and connect_timeout in the DSN, opened with
// pq.NewConnector and sql.OpenDB (sql.Open dials without the query's
// context); pgx with default_query_exec_mode=exec (or simple_protocol) in
// the DSN. The cancel and the connection gate live in the openers'
// connectors; without them, set statement_timeout as a backstop and, on
// PostgreSQL 14 and later, client_connection_check_interval on the server,
// so that a backend whose client has gone notices it.
//
// # Sizing against PostgreSQL
//
// Every executing query holds one connection, so Workers is the number of
// connections the pool keeps busy:
//
//   - The openers set MaxOpenConns and MaxIdleConns to Workers +
//     Config.SpareConns (2 by default), so that each worker finds a
//     connection and keeps it between queries, and statements run outside
//     Fanout have SpareConns of their own. With fewer connections than workers the surplus queries wait
//     inside database/sql, which serves its waiters in random order: the
//     order and fairness that reqpool keeps are lost there.
//   - Directly to PostgreSQL, replicas × (Workers + SpareConns, plus the 2 kept for
//     pg_cancel_backend), plus other clients, must stay below the
//     server's max_connections less superuser_reserved_connections. With
//     max_connections=100, 3 reserved and 4 replicas, Workers=18 leaves 9
//     connections spare.
//   - Behind PgBouncer in transaction mode, replicas × (Workers + SpareConns) is
//     what PgBouncer's max_client_conn must allow; the server sees at most
//     default_pool_size connections per database and user, which must stay
//     below max_connections. When replicas × Workers exceeds
//     default_pool_size, statements wait in PgBouncer, first come first
//     served, and reqpool's order holds only within each replica: size
//     default_pool_size to replicas × Workers where the server allows.
//   - Workers is best set near the database's knee: the fewest queries at
//     once that keep it busy. Past it, queries only time-share the server
//     and the queue forms there, out of the scheduler's reach; below it,
//     the server idles. Config.Adaptive makes Workers a ceiling and finds
//     the knee from the queries' run times (Stats.Limit; see
//     BenchmarkAdaptivePhases for what it reaches on this project's
//     machine).
//   - QueueSize sets how much waiting you accept: a full queue waits about
//     QueueSize/Workers × the mean query time. Past it, Fanout answers
//     ErrQueueFull and WriteError 503, which a load balancer can retry
//     elsewhere.
//
// lib/pq reports a backend terminated mid-statement (a restart,
// pg_terminate_backend) as driver.ErrBadConn, and database/sql then runs the
// statement again on a fresh connection, up to three times in all. A
// statement cut short by a restart may run twice: keep Exec statements
// idempotent, or put them in a transaction.
//
// # Observability
//
// Pool.Observe attaches an Observer, told when each query was admitted,
// started and finished and how it ended, and why each refused Fanout was
// refused; with none attached a Fanout pays one atomic load, and each
// observed query one monotonic clock read. The modules
// github.com/reqpool/reqpool/reqprom (Prometheus) and
// github.com/reqpool/reqpool/reqotel (OpenTelemetry spans and metrics) are
// Observers; Pool.DebugHandler serves a live page of the pool and its
// requests; Config.ServerTiming adds a Server-Timing header with the wall
// time during which each request had queries waiting or running, and their
// queue wait and run time summed over its queries.
//
// # Limits of net/http
//
// The request context is how the server tells a handler that the client has
// gone, and it has limits worth knowing:
//
//   - Over HTTP/1.1 the server notices a disconnect only once the request
//     body has been read to its end (it reads ahead for the next request on
//     the connection, and that read is what sees the close). Read or discard
//     the body before fanning out, or a hang-up goes unnoticed until the
//     handler is done. HTTP/2 sends RST_STREAM and has no such limit.
//   - The request context carries no cause: context.Cause(r.Context()) is
//     context.Canceled whether the client went away or ServeHTTP returned, so
//     the two look alike. WriteError treats any cancelled request context as a
//     client that is gone and writes nothing.
//   - A proxy in front of the server may keep the upstream connection open
//     after its client left; then nothing is cancelled until the proxy gives
//     up.
//   - http.Server's WriteTimeout does not cancel the request context; set a
//     deadline on the context (http.TimeoutHandler, or context.WithTimeout in
//     a middleware) to bound the queries.
package reqpool
