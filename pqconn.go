package reqpool

import (
	"context"
	"database/sql/driver"
	"reflect"

	"github.com/reqpool/reqpool/internal/pgwire"
)

// pqDriverConn is what database/sql uses of a lib/pq connection.
type pqDriverConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
	driver.NamedValueChecker
}

// pqConn is a lib/pq connection whose statements are cancelled by the
// gate's Canceller instead of by lib/pq: lib/pq only ever sees a context
// that does not end.
//
// lib/pq's own cancel marks the connection bad and closes it after every
// cancelled statement, so each cost the server a new backend (a fork and a
// login); it sends one CancelRequest, lost if it arrives before the
// statement runs, and then waits for the statement to end. Here, a
// statement whose context has already ended is never sent; one whose
// context ends while it runs is chased as pgwire.Canceller says; and once
// it has ended and its CancelRequests have been answered, the connection
// runs the next statement. Only a connection that was cut off, or whose
// CancelRequest went unanswered, is discarded.
type pqConn struct {
	conn   pqDriverConn
	cancel *pgwire.Canceller
}

// wrapPQ wraps conn, just opened through d, in a pqConn. If a lib/pq
// upgrade hides the backend key or the interfaces pqConn needs, conn is
// returned as it is, and lib/pq cancels its own statements.
func wrapPQ(conn driver.Conn, gate *pgwire.Gate, d *pqDialer) (_ driver.Conn, err error) {
	pc, ok := conn.(pqDriverConn)
	pid, key, keyOK := pqCancelKey(conn)
	if !ok || !keyOK {
		return conn, nil
	}
	b := pgwire.Backend{PID: pid, Key: key}
	if b.ProbePID, b.Interval, err = pqProbe(pc); err != nil {
		pc.Close()
		return nil, err
	}
	return &pqConn{conn: pc, cancel: gate.NewCanceller(d.socket(), d.Dialer.DialContext, b)}, nil
}

// pqProbe runs pgwire.ProbeQuery on a new connection.
func pqProbe(pc pqDriverConn) (backendPID int64, interval string, err error) {
	rows, err := pc.QueryContext(context.Background(), pgwire.ProbeQuery, nil)
	if err != nil {
		return 0, "", err
	}
	defer rows.Close()
	row := make([]driver.Value, 2)
	if err := rows.Next(row); err != nil {
		return 0, "", err
	}
	backendPID, _ = row[0].(int64)
	switch v := row[1].(type) {
	case string:
		interval = v
	case []byte:
		interval = string(v)
	}
	return backendPID, interval, nil
}

// watch readies the connection for a statement under ctx. The statement
// must be sent with context.Background() and end() called once it has
// ended. It fails, sending nothing, if ctx has ended (a CancelRequest could
// reach the backend before the statement and be lost) or the connection
// must not be used.
func (c *pqConn) watch(ctx context.Context) (end func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	seq, ok, err := c.cancel.Start(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, driver.ErrBadConn
	}
	if ctx.Done() == nil {
		return func() {}, nil
	}
	stop := context.AfterFunc(ctx, func() { c.cancel.Begin(seq) })
	return func() {
		if !stop() {
			c.cancel.End(seq)
		}
	}, nil
}

func (c *pqConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	end, err := c.watch(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	return c.conn.ExecContext(context.Background(), query, args)
}

func (c *pqConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	end, err := c.watch(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := c.conn.QueryContext(context.Background(), query, args)
	if err != nil {
		end()
		return nil, err
	}
	return &pqRows{Rows: rows, end: end}, nil
}

func (c *pqConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	end, err := c.watch(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	st, err := c.conn.PrepareContext(context.Background(), query)
	if err != nil {
		return nil, err
	}
	return &pqStmt{Stmt: st, conn: c}, nil
}

func (c *pqConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// BeginTx watches BEGIN alone: database/sql rolls back a transaction whose
// context ends, and each statement in it is watched under its own context.
func (c *pqConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	end, err := c.watch(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	return c.conn.BeginTx(context.Background(), opts)
}

func (c *pqConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *pqConn) Ping(ctx context.Context) error {
	end, err := c.watch(ctx)
	if err != nil {
		return err
	}
	defer end()
	return c.conn.Ping(context.Background())
}

func (c *pqConn) ResetSession(ctx context.Context) error {
	if !c.IsValid() {
		return driver.ErrBadConn
	}
	return c.conn.ResetSession(ctx)
}

func (c *pqConn) IsValid() bool { return c.cancel.Usable() && c.conn.IsValid() }

func (c *pqConn) CheckNamedValue(nv *driver.NamedValue) error { return c.conn.CheckNamedValue(nv) }

func (c *pqConn) Close() error { return c.conn.Close() }

// pqStmt is a prepared statement of a pqConn, watched as the conn's own
// statements are.
type pqStmt struct {
	driver.Stmt
	conn *pqConn
}

func (s *pqStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	end, err := s.conn.watch(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	return s.Stmt.(driver.StmtExecContext).ExecContext(context.Background(), args)
}

func (s *pqStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	end, err := s.conn.watch(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.Stmt.(driver.StmtQueryContext).QueryContext(context.Background(), args)
	if err != nil {
		end()
		return nil, err
	}
	return &pqRows{Rows: rows, end: end}, nil
}

// pqRows are the rows of a watched query: the statement runs until they
// are closed. They pass on the column-type and result-set interfaces of
// lib/pq's rows, which database/sql looks for.
type pqRows struct {
	driver.Rows
	end func() // nil once called
}

func (r *pqRows) Close() error {
	err := r.Rows.Close()
	if r.end != nil {
		r.end()
		r.end = nil
	}
	return err
}

func (r *pqRows) HasNextResultSet() bool {
	n, ok := r.Rows.(driver.RowsNextResultSet)
	return ok && n.HasNextResultSet()
}

func (r *pqRows) NextResultSet() error {
	if n, ok := r.Rows.(driver.RowsNextResultSet); ok {
		return n.NextResultSet()
	}
	return driver.ErrSkip
}

func (r *pqRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *pqRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *pqRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *pqRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

// pqCancelKey reads the backend process id and secret key that lib/pq
// received in BackendKeyData and keeps in its unexported conn fields pid and
// secretKey: lib/pq offers no other way to send a CancelRequest of one's
// own. Reading them through reflect needs no unsafe and cannot corrupt
// anything; TestPQCancelKey fails if a lib/pq upgrade renames them, and
// without them lib/pq's own cancel stays in charge.
func pqCancelKey(conn driver.Conn) (pid uint32, key []byte, ok bool) {
	v := reflect.ValueOf(conn)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return 0, nil, false
	}
	f, k := v.Elem().FieldByName("pid"), v.Elem().FieldByName("secretKey")
	if !f.IsValid() || f.Kind() != reflect.Int || !k.IsValid() || k.Kind() != reflect.Slice || k.Type().Elem().Kind() != reflect.Uint8 {
		return 0, nil, false
	}
	key = append([]byte(nil), k.Bytes()...)
	return uint32(f.Int()), key, len(key) > 0
}
