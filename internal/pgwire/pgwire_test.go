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
