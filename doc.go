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
// A Fanout of 8 no-op queries costs about 600–750 ns and 3 allocations
// (about 80 ns per query) on a 2-core machine, against about 2.4 µs and 20
// allocations for an errgroup or a global semaphore with an errgroup; see
// BenchmarkFanout8, and BENCHMARKS.md for pond and ants. The caller runs its own queries while a slot is free, so
// a Fanout on an idle pool hands nothing to another goroutine that it need
// not.
//
// # SQL
//
// Select, Get, Exec and ExecResult wrap sqlx for the common case:
//
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
// # Sizing against PostgreSQL
//
// Every executing query holds one connection, so Workers is the number of
// connections the pool keeps busy:
//
//   - Set db.SetMaxOpenConns(Workers), plus whatever else shares the
//     *sql.DB, and SetMaxIdleConns to the same, so connections are reused
//     rather than reopened. With fewer connections than workers the surplus
//     queries wait inside database/sql, which serves its waiters in random
//     order: the order and fairness that reqpool keeps are lost there.
//   - Across replicas, replicas × Workers, plus other clients, plus headroom
//     for cancel requests, must stay below the server's max_connections less
//     superuser_reserved_connections. With max_connections=100, 3 reserved
//     and 4 replicas, Workers=20 leaves 17 connections spare.
//   - QueueSize sets how much waiting you accept: a full queue waits about
//     QueueSize/Workers × the mean query time. Past it, Fanout answers
//     ErrQueueFull and WriteError 503, which a load balancer can retry
//     elsewhere.
//
// lib/pq facts that matter here:
//
//   - Cancelling a query costs one extra connection: lib/pq dials the
//     server anew to send the CancelRequest, and closes the cancelled
//     connection rather than reusing it. A burst of hang-ups is a burst of
//     connections: leave headroom in max_connections.
//   - Open the database with pq.NewConnector and sql.OpenDB, not sql.Open:
//     sql.Open dials through driver.Open, which ignores the query's context,
//     so a server that does not answer holds the query until the operating
//     system gives up. Through a Connector the dial honours the context, and
//     connect_timeout in the DSN bounds the handshake.
//   - lib/pq reports a backend terminated mid-statement (a restart,
//     pg_terminate_backend) as driver.ErrBadConn, and database/sql then runs
//     the statement again on a fresh connection, up to three times in all. A
//     statement cut short by a restart may run twice: keep Exec statements
//     idempotent, or put them in a transaction.
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
