// Package pgwire holds what reqpool's two PostgreSQL openers share, whatever
// the driver: a connector that keeps an outage calm and adopts the
// connection attempts of callers who left (Gate), a dialer guard against
// TCP connecting to itself (CheckSelfConnect), and the cancel of a
// statement whose context ended (Canceller, Socket, SendCancel): with
// pg_cancel_backend over a connection kept for it when the connection
// reaches PostgreSQL itself, with CancelRequests, backing off and bounded,
// through PgBouncer, and a cut-off that frees the caller without leaving
// the statement running.
//
// It is internal so that the root package (lib/pq) and the reqpgx module
// (pgx) can share it without making any of it public API.
package pgwire
