// Package pgwire holds what reqpool's two PostgreSQL openers share, whatever
// the driver: a connector that keeps an outage calm (Gate), a dialer guard
// against TCP connecting to itself (CheckSelfConnect), and a cancel that does
// not depend on the first CancelRequest landing (Chase, SendCancel).
//
// It is internal so that the root package (lib/pq) and the reqpgx module
// (pgx) can share it without making any of it public API.
package pgwire
