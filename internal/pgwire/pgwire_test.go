package pgwire

import (
	"context"
	"database/sql/driver"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
)

// counting is a driver.Connector that counts the attempts it passes on.
type counting struct {
	driver.Connector
	n atomic.Int64
}

func (c *counting) Connect(ctx context.Context) (driver.Conn, error) {
	c.n.Add(1)
	return c.Connector.Connect(ctx)
}

// deadAddr returns a loopback address on which nothing listens.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return l.Addr().String()
}

// TestGate: against a port with nothing behind it, the gate lets one real
// attempt through per RetryInterval and refuses the rest at once, with an
// error that matches ErrUnavailable and still reaches the dial error.
func TestGate(t *testing.T) {
	pc, err := pq.NewConnector("postgres://x@" + deadAddr(t) + "/x?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	inner := &counting{Connector: pc}
	g := NewGate(inner)
	now := time.Now()
	g.now = func() time.Time { return now }

	var opErr *net.OpError
	for i := range 1000 {
		_, err := g.Connect(context.Background())
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &opErr) {
			t.Fatalf("attempt %d: %v, want ErrUnavailable wrapping a *net.OpError", i, err)
		}
	}
	if n := inner.n.Load(); n != 1 {
		t.Errorf("1000 attempts within RetryInterval reached the server %d times, want 1", n)
	}
	now = now.Add(RetryInterval)
	g.Connect(context.Background())
	if n := inner.n.Load(); n != 2 {
		t.Errorf("after RetryInterval: %d attempts, want 2", n)
	}
	// A probe outlives a caller that gives up, and still counts.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	now = now.Add(RetryInterval)
	if _, err := g.Connect(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v, want context.Canceled", err)
	}
	for g.probingForTest() {
		time.Sleep(time.Millisecond)
	}
	if _, err := g.Connect(context.Background()); !errors.Is(err, ErrUnavailable) || inner.n.Load() != 3 {
		t.Errorf("after the abandoned probe failed: %v with %d attempts, want ErrUnavailable and 3", err, inner.n.Load())
	}
}

// TestCheckSelfConnect makes a real TCP connection to itself (a dial from a
// port to the same port, with nothing listening, is a simultaneous open on
// Linux) and checks that it is refused and closed.
func TestCheckSelfConnect(t *testing.T) {
	addr, err := net.ResolveTCPAddr("tcp", deadAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: addr}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Skipf("no self-connection on this system: %v", err)
	}
	if _, err := CheckSelfConnect(c); err == nil {
		t.Fatal("CheckSelfConnect accepted a connection to itself")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("the self-connection is still open")
	}
	// An ordinary connection passes.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c2, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := CheckSelfConnect(c2); err != nil {
		t.Errorf("ordinary connection: %v", err)
	}
}

func (g *Gate) probingForTest() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.probing
}

// TestGateCloseWaitsForCancels: DB.Close (the gate's Close) returns only
// once the cancels started through Go have ended.
func TestGateCloseWaitsForCancels(t *testing.T) {
	g := NewGate(nil)
	release := make(chan struct{})
	var finished atomic.Bool
	g.Go(func() { <-release; finished.Store(true) })
	closed := make(chan struct{})
	go func() { g.Close(); close(closed) }()
	close(release)
	<-closed
	if !finished.Load() {
		t.Error("Close returned while a cancel was in flight")
	}
}

// TestGateCloseWaitsForLateCancels: a cancel started while Close waits (a
// statement cancelled as the database closes) is waited for too.
func TestGateCloseWaitsForLateCancels(t *testing.T) {
	g := NewGate(nil)
	first, second := make(chan struct{}), make(chan struct{})
	var finished atomic.Int32
	g.Go(func() { <-first; finished.Add(1) })
	closed := make(chan struct{})
	go func() { g.Close(); close(closed) }()
	g.Go(func() { <-second; finished.Add(1) }) // while Close waits, or before
	close(first)
	close(second)
	<-closed
	if n := finished.Load(); n != 2 {
		t.Errorf("Close returned with %d of 2 cancels finished", n)
	}
}

// TestSocketRelease: a released socket frees the driver's pending read at
// once, drops what the driver writes from then on (a Terminate would reach
// PgBouncer as a client leaving mid-statement), and holds the driver's
// Close until the server has sent ReadyForQuery.
func TestSocketRelease(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	g := NewGate(nil)
	s := g.NewSocket(client, "tcp", "127.0.0.1:5432")

	// A statement goes out, and the driver waits for its answer.
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 64)
		n, _ := server.Read(buf)
		got <- buf[:n]
	}()
	if _, err := s.Write([]byte("Q statement")); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != "Q statement" {
		t.Fatalf("server read %q", b)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 64))
		readErr <- err
	}()
	s.Release()
	if s.Idle() {
		t.Error("Idle after Release while the statement runs")
	}
	var ne net.Error
	if err := <-readErr; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("pending read after Release: %v, want a timeout", err)
	}
	if a := s.RemoteAddr(); a != CutAddr || CheckDial(a.Network()) == nil {
		t.Errorf("RemoteAddr after Release = %v; a dial to it must be refused", a)
	}

	// The driver gives up: Terminate, then Close. Neither reaches the server.
	if n, err := s.Write([]byte{'X', 0, 0, 0, 4}); n != 5 || err != nil {
		t.Fatalf("Write after Release = %d, %v; want it dropped as written", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Closed():
		t.Fatal("closed while the statement runs")
	default:
	}

	// The statement ends: an error, then ReadyForQuery. Only then does the
	// socket close, and the server reads EOF, not the Terminate.
	if _, err := server.Write([]byte{'E', 0, 0, 0, 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte{'Z', 0, 0, 0, 5, 'I'}); err != nil {
		t.Fatal(err)
	}
	<-s.Closed()
	if !s.Idle() {
		t.Error("not Idle once the server sent ReadyForQuery")
	}
	if n, err := server.Read(make([]byte, 8)); err == nil {
		t.Errorf("server read %d bytes after the socket closed, want EOF", n)
	}
	g.Close()
}

// pipeCanceller returns a Canceller of a gate of its own on one end of a
// pipe, whose CancelRequests fail at the dial, and the pipe's other end;
// the test's end closes the gate and the pipe.
func pipeCanceller(t *testing.T) (*Canceller, *Gate, net.Conn) {
	client, server := net.Pipe()
	g := NewGate(nil)
	t.Cleanup(func() {
		server.Close()
		g.Close()
	})
	refuse := func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no server") }
	return &Canceller{gate: g, sock: g.NewSocket(client, "tcp", "127.0.0.1:5432"), dial: refuse}, g, server
}

// TestCutAfterEnd: a chase's cut-off that comes after End (its timer fired
// as End stopped it, or its goroutine woke late) leaves the connection
// alone: the next statement goes out on the socket as it is, and is
// chased when its own context ends.
func TestCutAfterEnd(t *testing.T) {
	c, g, server := pipeCanceller(t)

	// A statement whose context ended, chased (by hand: no CancelRequest
	// goes out), ends.
	seq, _, _ := c.Start(context.Background())
	ch := &chase{stop: make(chan struct{}), settled: make(chan struct{})}
	c.mu.Lock()
	c.chase = ch
	c.mu.Unlock()
	if !c.End(seq) {
		t.Fatal("End of a chased statement: connection not reusable")
	}

	// The chase's cut-off comes now.
	if !c.cut(ch) {
		t.Error("cut after End: the chase goes on")
	}
	next, ok, err := c.Start(context.Background())
	if !ok || err != nil {
		t.Fatalf("Start after a late cut = %v, %v; want the connection usable", ok, err)
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 64)
		n, _ := server.Read(buf)
		got <- buf[:n]
	}()
	if _, err := c.sock.Write([]byte("Q next")); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != "Q next" {
		t.Fatalf("server read %q: the socket was released", b)
	}
	c.Begin(next)
	if n := g.CancelStats().Statements; n != 1 {
		t.Errorf("the next statement's context ended: %d chases, want 1", n)
	}
	c.End(next)
}

// TestBeginAfterEnd: a Begin that comes after End (lib/pq's AfterFunc ran
// late, once the statement had ended) chases nothing: a chase then would
// cut the next statement off.
func TestBeginAfterEnd(t *testing.T) {
	c, g, _ := pipeCanceller(t)

	seq, _, _ := c.Start(context.Background())
	if !c.End(seq) {
		t.Fatal("End of a statement never chased: connection not reusable")
	}
	c.Begin(seq)
	if n := g.CancelStats().Statements; n != 0 {
		t.Errorf("Begin after End: %d chases, want 0", n)
	}
	next, ok, err := c.Start(context.Background())
	if !ok || err != nil {
		t.Fatalf("Start = %v, %v; want the connection usable", ok, err)
	}
	c.Begin(next)
	if n := g.CancelStats().Statements; n != 1 {
		t.Errorf("the next statement's context ended: %d chases, want 1", n)
	}
	c.End(next)
}

// TestRefusedParameter: the refusals of PgBouncer and of PostgreSQL before
// 14, and nothing else.
func TestRefusedParameter(t *testing.T) {
	for _, c := range []struct {
		code, msg string
		want      bool
	}{
		{"08P01", "unsupported startup parameter: client_connection_check_interval", true},
		{"42704", `unrecognized configuration parameter "client_connection_check_interval"`, true},
		{"08P01", "unsupported startup parameter: extra_float_digits", false},
		{"28P01", "password authentication failed", false},
	} {
		if got := RefusedParameter(c.code, c.msg); got != c.want {
			t.Errorf("RefusedParameter(%q, %q) = %v", c.code, c.msg, got)
		}
	}
}

// short is a driver.Connector that refuses with too_many_connections while
// full is set, and otherwise connects (to nothing).
type short struct {
	full     atomic.Bool
	attempts atomic.Int64
}

func (s *short) Connect(context.Context) (driver.Conn, error) {
	s.attempts.Add(1)
	if s.full.Load() {
		return nil, &pq.Error{Code: "53300", Message: "too many connections for role"}
	}
	return nopConn{}, nil
}

func (s *short) Driver() driver.Driver { return nil }

type nopConn struct{ driver.Conn }

func (nopConn) Close() error { return nil }

// shortGate returns a gate in front of a full server, with established
// connections of its own, and the channel its limit function reports to
// (enough: 4).
func shortGate(established int) (*short, *Gate, chan int) {
	s := &short{}
	s.full.Store(true)
	g := NewGate(s)
	limits := make(chan int, 64)
	g.OnLimit(4, func(n int) { limits <- n })
	for range established {
		g.connEstablished()
	}
	return s, g, limits
}

// TestGateShortage: a refusal for lack of slots while 2 connections work
// fails that attempt but leaves the gate open, and sets the limit to 2;
// probes then grow it back (here the probes' connections are not sockets
// of the gate's, so the limit ends when maxOrphans are kept unadopted);
// and Close during a shortage lifts the limit.
func TestGateShortage(t *testing.T) {
	s, g, limits := shortGate(2)

	if _, err := g.Connect(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Connect in a shortage = %v, want ErrUnavailable", err)
	}
	if n := <-limits; n != 2 {
		t.Fatalf("limit %d, want the 2 connections that work", n)
	}
	before := s.attempts.Load()
	g.Connect(context.Background()) // not refused at once: a shortage is not an outage
	if s.attempts.Load() == before {
		t.Error("the gate refused an attempt at once after a shortage, as after an outage")
	}

	s.full.Store(false)
	for n := range limits { // the probes succeed, one after the other
		if n == 0 {
			break
		}
	}
	g.mu.Lock()
	kept := len(g.orphans)
	g.mu.Unlock()
	if kept != maxOrphans {
		t.Errorf("%d probe connections kept for the next Connect, want %d", kept, maxOrphans)
	}
	g.Close()

	// Close in a shortage lifts the limit.
	_, g2, limits2 := shortGate(1)
	g2.Connect(context.Background())
	if n := <-limits2; n != 1 {
		t.Fatalf("limit %d, want 1", n)
	}
	g2.Close()
	if n := <-limits2; n != 0 {
		t.Errorf("limit %d after Close, want 0", n)
	}
}
