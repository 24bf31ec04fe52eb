package pgwire

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The timing of a Canceller's chase. A CancelRequest reaches a backend as a
// signal, which PostgreSQL discards when the backend is not executing a
// statement: when it arrives before the backend has read the statement, or
// between the round trips of one; PgBouncer drops it while the statement
// still waits inside PgBouncer for a server connection, or has not reached
// PgBouncer yet. Both drivers send one CancelRequest and then wait for the
// statement to end, so such a lost cancel would hold the caller (and the
// server) for the statement's whole run. A Canceller therefore sends
// another while the statement outlives the last one, backing off.
//
// Every CancelRequest is a new connection that PostgreSQL's postmaster forks
// a process for, one at a time: 11 ms each on our 2-core machine, 26 ms of
// CPU in a storm, so 16 sent at once are answered over 15 to 95 ms. The old
// fixed retry every 25 ms asked for 40 forks a second per cancelled
// statement; in a storm of hang-ups the queued cancels landed late, on
// backends long gone, and the cut-off then left statements running. Hence
// pg_cancel_backend where the connection reaches PostgreSQL itself (see
// signaller), the backoff, the bound on CancelRequests in flight per Gate,
// no retry while an earlier one of the same statement is still out, and a
// cut-off that keeps a PgBouncer connection open until the statement ends
// (Socket.Release).
const (
	// FirstRetry is the time between the first cancel of a statement and
	// the second, sent only if the statement is still running and no
	// earlier one is still out; each later retry waits twice as long, up to
	// MaxRetryWait.
	FirstRetry = 50 * time.Millisecond

	// CutOff is how long a statement may outlive its context before the
	// Canceller frees the driver, so that the caller returns whatever the
	// server does. Through PgBouncer most cancels land within it only while
	// PgBouncer has a server connection for the statement: it drops a
	// CancelRequest for a client that still waits for one (pgbouncer#1222),
	// and in a storm of hang-ups clients wait, as PgBouncer opens server
	// connections one at a time (SHOW POOLS in the hang-up soak: 10 to 24
	// clients waiting, 1 to 11 servers active). Such a statement can only be
	// cut off. The hang-up soak's handlers came back within 201 to 230 ms
	// (p99) of their hang-up with 200 ms, 152 to 170 ms with 150, and 100 to
	// 103 ms with 100, at the cost of more PgBouncer client connections
	// cut off (cheap: no server process).
	//
	// A connection cut off is never reused. If its backend checks its
	// client socket (CheckInterval), the socket is closed, which ends the
	// statement within CheckInterval; otherwise it is released
	// (Socket.Release) and the CancelRequests go on, backing off, until the
	// statement ends or DrainLimit.
	CutOff = 100 * time.Millisecond

	// MaxRetryWait caps the time between two cancels of one statement. A
	// CancelRequest that PgBouncer drops (its client still waits inside
	// PgBouncer for a server connection) costs the server nothing.
	MaxRetryWait = 100 * time.Millisecond

	// MaxCancelsInFlight bounds the CancelRequests of one Gate's
	// connections out at once. A statement that ends while its
	// CancelRequest waits for a slot sends none.
	//
	// A chase has at most one CancelRequest out, so this bounds only a
	// storm of more chased statements than slots: 16, the statements of a
	// pool of DefaultWorkers, all cancelled at once. With 4, through
	// PgBouncer (which forwards each CancelRequest over a new server
	// connection, 60 to 150 ms on our busy 2-core machine), the 4 slots
	// were 85 to 95% busy through the whole hang-up soak: a statement's
	// first CancelRequest waited 300 to 600 ms for a slot (p50), most
	// went out after CutOff, and the last ones answered up to 1 s after
	// the last hang-up, leaving statements running. With 16 the wait is
	// under 20 ms (p90) and each CancelRequest takes 150 to 300 ms (p50).
	MaxCancelsInFlight = 16

	// settleTimeout bounds how long the next statement on a connection
	// waits for the CancelRequests of the last one still out, so that none
	// can reach it. PostgreSQL answers one as soon as it has signalled the
	// backend, so this is a bound for a server that does not answer, after
	// which the connection is not reused.
	settleTimeout = 250 * time.Millisecond

	// cancelTimeout bounds one CancelRequest, dial included.
	cancelTimeout = time.Second
)

// CheckInterval is the client_connection_check_interval that the openers ask
// of a direct connection's backend (PostgreSQL 14 or later): while a
// statement runs, the backend checks every CheckInterval whether its client
// socket is closed and, if so, ends the statement and the connection. It
// costs the backend one poll(2) per interval and needs no CancelRequest.
const CheckInterval = "100ms"

// CancelStats counts a Gate's cancels since it was opened.
type CancelStats struct {
	Statements int64 // statements whose context ended while they ran
	Requests   int64 // CancelRequests sent for them
	Signals    int64 // pg_cancel_backend calls made for them instead
	CutOffs    int64 // connections cut off after CutOff
	Reused     int64 // connections kept after a cancel
}

// cancelCounts is a Gate's CancelStats, counted atomically.
type cancelCounts struct {
	statements, requests, signals, cutOffs, reused atomic.Int64
}

// CancelStats returns the gate's counts.
func (g *Gate) CancelStats() CancelStats {
	c := &g.cancels
	return CancelStats{c.statements.Load(), c.requests.Load(), c.signals.Load(), c.cutOffs.Load(), c.reused.Load()}
}

// A Canceller cancels the statements of one connection whose context ends
// while they run. The driver calls Start before it sends a statement, Begin
// when the statement's context ends while it runs, and End once the
// statement has ended (for a query, once its rows are closed). One
// statement runs at a time on a connection; a Begin for a statement that
// has ended (a late callback) does nothing.
type Canceller struct {
	gate *Gate
	sock *Socket
	// pid is the backend's process id for pg_cancel_backend, or 0 if the
	// connection does not reach PostgreSQL itself; checked: the backend
	// checks its client socket, so closing it ends the statement.
	pid     uint32
	checked bool
	// What a CancelRequest for the connection's backend needs.
	dial             DialFunc
	network, address string // sock.CancelAddr()
	keyPID           uint32
	key              []byte

	mu     sync.Mutex // protects the fields below
	seq    uint64     // the statement under way, or the last one
	ended  uint64     // the last statement End was called for
	chase  *chase     // the chase of statement seq, from Begin to End
	last   *chase     // the last chase that End ended, until its CancelRequests are answered
	broken bool       // cut off, or a CancelRequest went unanswered: never reuse
}

// chase is the pursuit of one statement. Its counts are guarded by the
// Canceller's mu.
type chase struct {
	stop    chan struct{} // closed when no more CancelRequests are to go out
	pending int           // CancelRequests waiting for a slot or out
	settled chan struct{} // closed once stop is closed and pending is 0
}

// DialFunc dials the server, for a CancelRequest.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Backend is what a Canceller needs to know of its connection's server: the
// BackendKeyData (PID, Key), and the answer to ProbeQuery on the connection
// (ProbePID, Interval).
type Backend struct {
	PID      uint32
	Key      []byte
	ProbePID int64
	Interval string
}

// NewCanceller returns the Canceller of a connection of g's on sock, which
// dials with dial. The connection reaches PostgreSQL itself, so that
// pg_cancel_backend can name its backend, only if ProbeQuery's process id
// is the one in BackendKeyData (PgBouncer makes up its own); closing it
// ends its statement if, besides, the backend checks its client socket.
func (g *Gate) NewCanceller(sock *Socket, dial DialFunc, b Backend) *Canceller {
	c := &Canceller{gate: g, sock: sock, dial: dial, keyPID: b.PID, key: b.Key}
	c.network, c.address = sock.CancelAddr()
	if b.PID != 0 && b.ProbePID == int64(b.PID) {
		c.pid = b.PID
		c.checked = b.Interval != "0" && b.Interval != ""
		g.openSignaller()
	}
	return c
}

// Start readies the connection for a statement under ctx and returns its
// number for Begin and End. It first waits, for at most settleTimeout,
// until the CancelRequests of the last statement are answered, and returns
// ctx's error if ctx ends meanwhile. It returns false if the connection
// must not be used: it was cut off, or a CancelRequest may still be on its
// way to it.
func (c *Canceller) Start(ctx context.Context) (seq uint64, ok bool, err error) {
	ok, err = c.Settle(ctx)
	if err != nil {
		return 0, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return c.seq, ok, nil
}

// Settle waits, for at most settleTimeout, until the CancelRequests of the
// last statement are answered, and reports whether the connection may run
// another statement. It returns ctx's error if ctx ends first.
func (c *Canceller) Settle(ctx context.Context) (bool, error) {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	if last != nil && !isClosed(last.settled) {
		t := time.NewTimer(settleTimeout)
		select {
		case <-last.settled:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		}
		t.Stop()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == last && last != nil {
		if isClosed(last.settled) {
			c.last = nil
		} else {
			c.broken = true
		}
	}
	return !c.broken, nil
}

// Usable reports whether the connection may run another statement, as far
// as its cancels go.
func (c *Canceller) Usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.broken
}

// Begin starts chasing statement seq, whose context has ended, unless it
// has ended already.
func (c *Canceller) Begin(seq uint64) {
	c.mu.Lock()
	// ended == seq: End came first. lib/pq's watch calls Begin from an
	// AfterFunc, which can run late, after the statement has ended: a
	// chase begun then would cut the next statement off. The shortage
	// scenario under -race caught it: a query failed with "use of closed
	// network connection" while its Fanout was live.
	if seq != c.seq || seq == c.ended || c.chase != nil || c.broken {
		c.mu.Unlock()
		return
	}
	ch := &chase{stop: make(chan struct{}), settled: make(chan struct{})}
	c.chase = ch
	c.mu.Unlock()
	c.gate.cancels.statements.Add(1)
	c.gate.Go(func() { c.pursue(ch) })
}

// pursue sends CancelRequests for ch's statement until it ends: one at
// once, then after FirstRetry, doubling up to MaxRetryWait, each only if
// none is still out. At CutOff it cuts the connection off, as CutOff says.
// A statement cut off has ended once its released socket is idle, which
// may be well before the driver closes it: no more CancelRequests then.
func (c *Canceller) pursue(ch *chase) {
	defer c.stopChase(ch)
	start := time.Now()
	c.request(ch)
	timer := time.NewTimer(FirstRetry)
	defer timer.Stop()
	for wait := FirstRetry; ; wait = min(2*wait, MaxRetryWait) {
		select {
		case <-ch.stop:
			return
		case <-c.sock.Closed():
			return
		case <-timer.C:
		}
		if c.sock.Idle() {
			return
		}
		if c.Usable() && time.Since(start) >= CutOff {
			if c.cut(ch) {
				return
			}
		}
		c.mu.Lock()
		idle := ch.pending == 0
		c.mu.Unlock()
		if idle {
			c.request(ch)
		}
		if c.Usable() {
			timer.Reset(min(wait, CutOff-time.Since(start)))
		} else {
			timer.Reset(wait)
		}
	}
}

// cut cuts the connection off for ch's statement: it closes the socket of
// a backend that checks it, and reports true; otherwise it releases the
// socket (Socket.Release) and reports false: the chase goes on.
//
// It does nothing, and reports true, once End has ended ch. The chase's
// timer can fire as End stops it (select then picks either), or its
// goroutine can wake late on a busy machine, and by then the connection
// may run the next statement: cut off, that one would be released with
// no chase (Begin ignores a broken connection) and run to its end on the
// server, while its caller got an i/o timeout. The hang-up soak through
// PgBouncer caught it: a statement sent 43 ms after its predecessor's
// End was released 56 ms later by the predecessor's chase, and ran its
// whole 3 s.
func (c *Canceller) cut(ch *chase) (done bool) {
	c.mu.Lock()
	if c.chase != ch { // End took it: the statement has ended
		c.mu.Unlock()
		return true
	}
	c.broken = true
	c.mu.Unlock()
	c.gate.cancels.cutOffs.Add(1)
	if c.checked {
		c.sock.markCut()
		c.sock.Close()
		return true
	}
	c.sock.Release()
	return false
}

// stopChase closes ch.stop, once.
func (c *Canceller) stopChase(ch *chase) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !isClosed(ch.stop) {
		close(ch.stop)
		if ch.pending == 0 {
			close(ch.settled)
		}
	}
}

// request queues one CancelRequest for ch's statement. It goes out when one
// of the gate's MaxCancelsInFlight slots is free, unless the chase has
// stopped by then.
func (c *Canceller) request(ch *chase) {
	c.mu.Lock()
	if isClosed(ch.stop) {
		c.mu.Unlock()
		return
	}
	ch.pending++
	c.mu.Unlock()
	c.gate.Go(func() {
		defer c.answered(ch)
		if c.pid != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
			defer cancel()
			if !isClosed(ch.stop) && c.gate.signal(ctx, c.pid) {
				c.gate.cancels.signals.Add(1)
				return
			}
		}
		select {
		case c.gate.cancelSlots <- struct{}{}:
			defer func() { <-c.gate.cancelSlots }()
		case <-ch.stop:
			return
		}
		if isClosed(ch.stop) { // stopped while waiting for the slot: not needed
			return
		}
		if c.gate.down() { // the server refuses connections: a CancelRequest would too
			return
		}
		c.gate.cancels.requests.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
		defer cancel()
		_ = SendCancel(ctx, c.dial, c.network, c.address, c.keyPID, c.key)
	})
}

// answered counts one CancelRequest of ch as answered (or not sent).
func (c *Canceller) answered(ch *chase) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch.pending--; ch.pending == 0 && isClosed(ch.stop) {
		close(ch.settled)
	}
}

// End notes that statement seq has ended and reports whether the connection
// may run another one: false if it was cut off. A cut-off chase goes on
// until the socket closes; any other stops, and the next Start waits for
// its CancelRequests still out.
func (c *Canceller) End(seq uint64) bool {
	c.mu.Lock()
	if seq == c.seq {
		c.ended = seq
	}
	ch := c.chase
	if seq != c.seq || ch == nil {
		defer c.mu.Unlock()
		return !c.broken
	}
	c.chase = nil
	if c.broken {
		c.mu.Unlock()
		return false
	}
	c.last = ch
	c.mu.Unlock()
	c.stopChase(ch)
	c.gate.cancels.reused.Add(1)
	return true
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// cancelRequestCode is the CancelRequest message's code (1234 << 16 | 5678).
const cancelRequestCode = 80877102

// SendCancel sends a CancelRequest for the backend (pid, key) to the server
// at network, address: PostgreSQL, or PgBouncer, which passes it on to the
// server connection that its client is linked to. It waits for the server to
// close the connection, which it does once it has read the request (and
// PostgreSQL once it has signalled the backend), or for ctx to end. It is
// sent in the clear, as lib/pq and libpq before 17 do: the server reads a
// CancelRequest before any authentication or pg_hba.conf check.
func SendCancel(ctx context.Context, dial DialFunc, network, address string, pid uint32, key []byte) error {
	c, err := dial(ctx, network, address)
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	msg := make([]byte, 12, 12+len(key))
	binary.BigEndian.PutUint32(msg[0:], uint32(12+len(key)))
	binary.BigEndian.PutUint32(msg[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(msg[8:], pid)
	msg = append(msg, key...)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, c)
	return err
}
