package reqpool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"

	"github.com/jmoiron/sqlx"
)

// Query is one unit of work for Fanout. Make one with Func, or with Select,
// Get, Exec and ExecResult for SQL. The zero Query is invalid: Fanout rejects
// it with ErrInvalidQuery.
type Query struct {
	run  func(ctx context.Context) error
	conn any   // the database handle of a SQL query, for the single-connection check
	err  error // a construction error, reported by Fanout before anything runs
}

// Func returns a Query that calls fn. fn receives a context that is done
// when the request ends, when another query of the same Fanout fails, or when
// the pool shuts down; it should return soon after. Pass that context to any
// Fanout that fn itself makes, so the nested queries can run in fn's slot.
func Func(fn func(ctx context.Context) error) Query {
	if fn == nil {
		return Query{err: errNilQuery}
	}
	return Query{run: fn}
}

// Select returns a Query that runs sqlx.SelectContext(ctx, q, dest, query,
// args...): it scans every row into dest, a pointer to a slice. The statement
// carries the request id as a SQL comment (see Config.DisableSQLComment).
//
// q is usually a *sqlx.DB. A *sqlx.Tx or *sqlx.Conn is one connection, which
// cannot run two statements at once: Fanout refuses two queries on the same
// one with ErrSharedConn.
func Select(q sqlx.QueryerContext, dest any, query string, args ...any) Query {
	if isNil(q) {
		return Query{err: errNilDB}
	}
	return Query{conn: q, run: func(ctx context.Context) error {
		return sqlx.SelectContext(ctx, q, dest, TagSQL(ctx, query), args...)
	}}
}

// Get returns a Query that runs sqlx.GetContext(ctx, q, dest, query,
// args...): it scans one row into dest. With no row, the query fails with an
// error that errors.Is matches to sql.ErrNoRows, and so does Fanout's. The
// statement is tagged and q checked as for Select.
func Get(q sqlx.QueryerContext, dest any, query string, args ...any) Query {
	if isNil(q) {
		return Query{err: errNilDB}
	}
	return Query{conn: q, run: func(ctx context.Context) error {
		return sqlx.GetContext(ctx, q, dest, TagSQL(ctx, query), args...)
	}}
}

// Exec returns a Query that runs e.ExecContext(ctx, query, args...) and
// discards its sql.Result; ExecResult keeps it. The statement is tagged and e
// checked as for Select.
func Exec(e sqlx.ExecerContext, query string, args ...any) Query {
	return ExecResult(e, nil, query, args...)
}

// ExecResult is Exec that stores the statement's sql.Result in *res (when res
// is not nil and the statement succeeded), for RowsAffected or LastInsertId.
func ExecResult(e sqlx.ExecerContext, res *sql.Result, query string, args ...any) Query {
	if isNil(e) {
		return Query{err: errNilDB}
	}
	return Query{conn: e, run: func(ctx context.Context) error {
		r, err := e.ExecContext(ctx, TagSQL(ctx, query), args...)
		if err == nil && res != nil {
			*res = r
		}
		return err
	}}
}

// Optional returns q with no row as an answer, not a failure: if q fails
// with an error that errors.Is matches to sql.ErrNoRows (Get finding no row,
// a Func returning it), the query succeeds and sets *found to false, so its
// Fanout goes on, no sibling is cancelled and no connection is lost; if q
// succeeds, *found is true. Any other error fails the Fanout as usual and
// leaves *found as it was. Read *found once Fanout has returned. A nil found
// makes Fanout fail with ErrInvalidQuery.
//
//	var org Org
//	var found bool
//	err := reqpool.Fanout(ctx,
//		reqpool.Get(db, &org, orgSQL, id).Optional(&found),
//		reqpool.Select(db, &users, usersSQL, id),
//	)
//	if err == nil && !found { /* 404 */ }
func (q Query) Optional(found *bool) Query {
	if q.err != nil || q.run == nil {
		return q // Fanout reports it
	}
	if found == nil {
		return Query{err: errNilFound}
	}
	run := q.run
	q.run = func(ctx context.Context) error {
		err := run(ctx)
		switch {
		case err == nil:
			*found = true
		case errors.Is(err, sql.ErrNoRows):
			*found = false
			return nil
		}
		return err
	}
	return q
}

// errNilQuery and errNilDB are the Err of the *QueryError that Fanout
// returns for a zero Query, or one built on a nil database handle.
var (
	errNilQuery = fmt.Errorf("%w: nil query function", ErrInvalidQuery)
	errNilDB    = fmt.Errorf("%w: nil database handle", ErrInvalidQuery)
	errNilFound = fmt.Errorf("%w: Optional with a nil *bool", ErrInvalidQuery)
)

// isNil reports whether h, a database handle, is nil: a nil interface, or
// a nil pointer in one (a *sqlx.DB never opened), which would panic in the
// query.
func isNil(h any) bool {
	if h == nil {
		return true
	}
	v := reflect.ValueOf(h)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// singleConn reports whether c is one database connection, which runs one
// statement at a time: a transaction or a dedicated connection.
func singleConn(c any) bool {
	switch c.(type) {
	case *sql.Tx, *sqlx.Tx, *sql.Conn, *sqlx.Conn:
		return true
	}
	return false
}

// checkQueries returns a *QueryError for the first query Fanout must refuse:
// an invalid one, or the second of two on the same single connection.
func checkQueries(queries []Query) error {
	for i, q := range queries {
		switch {
		case q.err != nil:
			return &QueryError{Index: i, Err: q.err}
		case q.run == nil:
			return &QueryError{Index: i, Err: errNilQuery}
		case singleConn(q.conn):
			for j := range i {
				if queries[j].conn == q.conn {
					return &QueryError{Index: i, Err: ErrSharedConn}
				}
			}
		}
	}
	return nil
}
