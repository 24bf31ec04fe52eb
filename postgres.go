package reqpool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net"
	"reflect"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/reqpool/reqpool/internal/pgwire"
)

// ErrDBUnavailable is wrapped in the error of a query that needed a new
// connection from a database opened by OpenPostgres (or reqpgx.Open) while
// the database refused connections: the attempt that failed, or one refused
// at once because another failed less than 250 ms before. errors.As still
// reaches the failure itself (a *net.OpError, a *pq.Error). WriteError
// answers it with 503.
var ErrDBUnavailable = pgwire.ErrUnavailable

// SpareConns is how many connections OpenPostgres and reqpgx.Open allow
// beyond the pool's Workers: room for statements the application runs
// outside Fanout (health checks, a migration) without taking a worker's
// connection.
const SpareConns = 2

// DefaultConnectTimeout bounds the opening of one connection when the DSN
// sets no connect_timeout. Without one a server that accepts TCP and then
// stalls holds every query that needs a new connection.
const DefaultConnectTimeout = 5 * time.Second

// OpenPostgres opens PostgreSQL at dsn (a postgres:// URL or a key=value
// string) with lib/pq, set up for p's Fanouts, directly or through PgBouncer
// in transaction mode. It returns an error for a DSN it cannot parse, and
// never panics; it does not connect until the first query (call PingContext
// to check the server at start-up). Close the *sqlx.DB when done.
//
// What it sets, and why (to do the same on a *sql.DB of your own, see the
// README's "Drivers and PgBouncer"):
//
//   - binary_parameters=yes: a statement with parameters goes out in one
//     round trip (Parse, Bind, Execute, Sync at once) instead of two. Behind
//     PgBouncer in transaction mode the server connection may change between
//     two round trips, and lib/pq then reads another client's results or
//     fails with "unnamed prepared statement does not exist". Prepared
//     statements (db.Prepare) stay unusable through such a PgBouncer.
//   - connect_timeout of DefaultConnectTimeout (5 s) when the DSN has none.
//   - The connector, not sql.Open, so that dialling honours the query's
//     context.
//   - A cancel that does not depend on the first CancelRequest landing:
//     PostgreSQL ignores a cancel that reaches a backend before it executes
//     the statement, and lib/pq then waits for the statement to end. While a
//     statement outlives its context, another CancelRequest goes out every
//     25 ms; after 250 ms the client closes the connection, so the caller
//     returns whatever the server does, and sends two more. Through
//     PgBouncer the cancel goes to PgBouncer, which passes it to the server
//     connection running the statement. A cancelled connection is never
//     reused.
//   - At most one connection attempt per 250 ms while attempts fail; the
//     others fail at once with ErrDBUnavailable. A database that is back is
//     in use again within about 250 ms.
//   - A TCP connection to itself (a dial to a local port with no listener
//     may pick that port as its source) is closed and reported as a dial
//     error, so that it cannot hold the port the server restarts on.
//   - SetMaxOpenConns and SetMaxIdleConns to Workers + SpareConns, so that
//     each worker finds a connection and keeps it between queries.
//
// The request-id tag of Select, Get and Exec costs lib/pq nothing measurable
// (see BENCHMARKS.md): it parses every statement anyway.
func OpenPostgres(dsn string, p *Pool) (*sqlx.DB, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: OpenPostgres with a nil *Pool", ErrInvalidConfig)
	}
	cfg, err := pqConfig(dsn)
	if err != nil {
		return nil, err
	}
	c := &pqConnector{cfg: cfg}
	c.gate = pgwire.NewGate(c)
	db := sql.OpenDB(c.gate)
	SizeDB(db, p)
	return sqlx.NewDb(db, "postgres"), nil
}

// pqConfig parses dsn and makes OpenPostgres's settings on it.
func pqConfig(dsn string) (pq.Config, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return cfg, fmt.Errorf("reqpool: parse PostgreSQL DSN: %w", err)
	}
	cfg.BinaryParameters = true
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if _, err := pq.NewConnectorConfig(cfg); err != nil { // report a bad config now, not at the first query
		return cfg, fmt.Errorf("reqpool: PostgreSQL config: %w", err)
	}
	return cfg, nil
}

// SizeDB sets db's open and idle connection limits for p's Fanouts:
// Workers + SpareConns each. OpenPostgres and reqpgx.Open call it.
func SizeDB(db *sql.DB, p *Pool) {
	n := p.cfg.Workers + SpareConns
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
}

// pqConnector opens lib/pq connections whose cancel is chased (see
// pgwire.Chase). Each connection gets a dialer of its own, which is how the
// connector learns of lib/pq's CancelRequest: lib/pq dials through the
// connection's dialer to send it.
type pqConnector struct {
	cfg  pq.Config
	gate *pgwire.Gate // the gate around it, which runs the chases
}

func (c *pqConnector) Driver() driver.Driver { return &pq.Driver{} }

func (c *pqConnector) Connect(ctx context.Context) (driver.Conn, error) {
	pc, err := pq.NewConnectorConfig(c.cfg)
	if err != nil {
		return nil, err
	}
	d := &pqDialer{gate: c.gate}
	pc.Dialer(d)
	conn, err := pc.Connect(ctx)
	if err != nil {
		return nil, err
	}
	d.connected(conn)
	return conn, nil
}

// pqDialer is the dialer of one lib/pq connection. Its dials before
// connected are connection attempts; the first dial after that is lib/pq
// sending a CancelRequest for a statement whose context ended, and starts
// the chase. lib/pq marks a connection bad once it has cancelled a
// statement on it (but not a prepared statement's: see doc.go), so there
// is one chase at most.
type pqDialer struct {
	net.Dialer
	gate *pgwire.Gate // runs the chase

	mu     sync.Mutex // protects the fields below
	conn   *closeConn // the socket of the last connection attempt
	cancel func()     // sends one more CancelRequest; nil until connected
	chased bool       // lib/pq cancelled: the chase has started
}

func (d *pqDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d *pqDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (d *pqDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if c, err = pgwire.CheckSelfConnect(c); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.cancel == nil: // connecting
		d.conn = &closeConn{Conn: c, network: network, address: address, closed: make(chan struct{})}
		return d.conn, nil
	case !d.chased:
		d.chased = true
		conn := d.conn
		d.gate.Chase(conn.closed, d.cancel, func() { conn.Close() })
	}
	// lib/pq's own CancelRequest: DB.Close waits for its socket to close too.
	return &closeConn{Conn: c, closed: make(chan struct{}), after: d.gate.Hold()}, nil
}

// connected arms the chase for conn, the connection just opened through d.
func (d *pqDialer) connected(conn driver.Conn) {
	pid, key, ok := pqCancelKey(conn)
	d.mu.Lock()
	defer d.mu.Unlock()
	// The socket's peer, not the DSN's host, which may name several
	// servers; but a unix socket's peer name is the server's relative path.
	network, address := d.conn.network, d.conn.address
	if a := d.conn.RemoteAddr(); network != "unix" && a != nil {
		network, address = a.Network(), a.String()
	}
	d.cancel = func() {
		if ok { // else the cut-off alone frees the caller
			_ = pgwire.SendCancel(d.Dialer.DialContext, network, address, pid, key)
		}
	}
}

// pqCancelKey reads the backend process id and secret key that lib/pq
// received in BackendKeyData and keeps in its unexported conn fields pid and
// secretKey: lib/pq offers no other way to send a second CancelRequest.
// Reading them through reflect needs no unsafe and cannot corrupt
// anything; TestPQCancelKey fails if a lib/pq upgrade renames them, and
// without them the chase still cuts the connection off after 250 ms.
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

// closeConn is a net.Conn whose closed channel is closed once it is closed,
// by lib/pq (at the end of a cancelled statement) or by the cut-off.
type closeConn struct {
	net.Conn
	network, address string // as dialled
	once             sync.Once
	closed           chan struct{}
	after            func() // if not nil, called once closed
}

func (c *closeConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		close(c.closed)
		if c.after != nil {
			c.after()
		}
	})
	return err
}
