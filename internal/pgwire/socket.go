package pgwire

import (
	"io"
	"net"
	"sync"
	"time"
)

// DrainLimit bounds how long a Socket that was released (see Release) stays
// open after its driver closed it, waiting for the statement to end.
const DrainLimit = 10 * time.Second

// readyForQuery is the whole ReadyForQuery message but its status byte:
// the last message the server sends before it waits for the next
// statement.
var readyForQuery = [5]byte{'Z', 0, 0, 0, 5}

// Socket is the net.Conn of one connection, which its Canceller can release
// from its driver without closing it.
//
// Closing a connection whose statement runs does not stop the statement:
// PostgreSQL notices a closed client socket only when it next writes to it
// (or every client_connection_check_interval, when set), and PgBouncer,
// when its client leaves mid-statement, closes its server connection and
// sends no cancel. So when a statement outlives its context too long, the
// Canceller releases the socket instead: the driver's pending read fails
// at once, so that the caller returns; what the driver writes from then on
// is dropped (a Terminate would reach PgBouncer as a client leaving); and
// its Close is held back until the server has sent ReadyForQuery, which it
// does once a CancelRequest has landed, or until DrainLimit.
//
// The end of a statement is seen in the bytes read: the last six are a
// ReadyForQuery message. A socket released with nothing written since the
// last one (the driver had yet to send its statement) is idle at once.
// Pipelined statements are not supported: the first ReadyForQuery would
// count as the end of all of them. (Row data that happened to end a read with those
// six bytes would close the socket early: the statement would then run on,
// as it would have without the hold.)
type Socket struct {
	net.Conn
	gate             *Gate  // runs the drain, so that DB.Close waits for it
	network, address string // as dialled

	mu       sync.Mutex    // protects the fields below
	tail     [6]byte       // the last six bytes read since the last write
	pending  bool          // written to since the last ReadyForQuery: a statement may run
	cut      bool          // cut off by its Canceller: RemoteAddr is CutAddr
	released bool          // the driver gave up on the connection: drop writes, hold Close
	idle     bool          // released, and the server has sent ReadyForQuery since
	closing  bool          // Close has been called
	ready    bool          // the server has sent its first ReadyForQuery: the connection is established
	closed   chan struct{} // closed once the socket is closed for real
}

// NewSocket wraps c, a connection's net.Conn dialled to network, address.
func (g *Gate) NewSocket(c net.Conn, network, address string) *Socket {
	return &Socket{Conn: c, gate: g, network: network, address: address, closed: make(chan struct{})}
}

// CancelAddr returns where to send the connection's CancelRequests: the
// socket's peer, not the DSN's host, which may name several servers; but a
// unix socket's peer name is the server's relative path, so that one goes
// where it was dialled.
func (s *Socket) CancelAddr() (network, address string) {
	if a := s.Conn.RemoteAddr(); s.network != "unix" && a != nil {
		return a.Network(), a.String()
	}
	return s.network, s.address
}

// CutNetwork is the network of CutAddr.
const CutNetwork = "reqpool-cut"

// CutAddr is the RemoteAddr of a Socket that its Canceller has cut off. A
// driver that sends a CancelRequest of its own when its read fails (pgx
// does, and waits for it before it closes) dials this address; the
// opener's dialer refuses it at once (see CheckDial), since the
// Canceller already chases the statement.
var CutAddr net.Addr = cutAddr{}

type cutAddr struct{}

func (cutAddr) Network() string { return CutNetwork }
func (cutAddr) String() string  { return "cut off by reqpool" }

// RemoteAddr is the peer's address, or CutAddr once cut off.
func (s *Socket) RemoteAddr() net.Addr {
	s.mu.Lock()
	cut := s.cut
	s.mu.Unlock()
	if cut {
		return CutAddr
	}
	return s.Conn.RemoteAddr()
}

// markCut makes RemoteAddr return CutAddr.
func (s *Socket) markCut() {
	s.mu.Lock()
	s.cut = true
	s.mu.Unlock()
}

// Closed is closed once the socket is closed for real.
func (s *Socket) Closed() <-chan struct{} { return s.closed }

// Idle reports whether the socket was released (Release) and no statement
// runs on it: none was sent, or the server has sent ReadyForQuery since.
// As a released socket drops what the driver writes, none can start.
func (s *Socket) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idle
}

func (s *Socket) Read(p []byte) (int, error) {
	s.mu.Lock()
	if s.idle {
		s.mu.Unlock()
		return 0, io.EOF
	}
	s.mu.Unlock()
	n, err := s.Conn.Read(p)
	s.mu.Lock()
	established := false
	defer func() {
		s.mu.Unlock()
		if established {
			s.gate.connEstablished()
		}
	}()
	if n > 0 {
		if n >= len(s.tail) {
			copy(s.tail[:], p[n-len(s.tail):n])
		} else {
			copy(s.tail[:], s.tail[n:])
			copy(s.tail[len(s.tail)-n:], p[:n])
		}
		if s.atReady() {
			s.pending = false
			established, s.ready = !s.ready, true
			if s.released && !s.idle {
				// The statement has ended. Another reader may be blocked
				// (pgx reads in the background): wake it, to read EOF.
				s.idle = true
				s.Conn.SetReadDeadline(time.Unix(1, 0))
			}
		}
	}
	if err != nil && s.idle {
		err = io.EOF
	}
	return n, err
}

// atReady reports whether the last bytes read are a ReadyForQuery. s.mu is
// held.
func (s *Socket) atReady() bool { return [5]byte(s.tail[:5]) == readyForQuery }

// Write notes that a statement may run until the next ReadyForQuery (and
// forgets the bytes read so far: what follows is the answer), or drops p
// once the socket is released.
func (s *Socket) Write(p []byte) (int, error) {
	s.mu.Lock()
	released := s.released
	if !released {
		s.tail, s.pending = [6]byte{}, true
	}
	s.mu.Unlock()
	if released {
		return len(p), nil
	}
	return s.Conn.Write(p)
}

// Release frees the driver's pending read at once and holds the socket open
// until the statement ends, as the type's doc says.
func (s *Socket) Release() {
	s.mu.Lock()
	s.cut, s.released = true, true
	s.idle = !s.pending
	s.mu.Unlock()
	s.Conn.SetReadDeadline(time.Unix(1, 0))
}

// Close closes the socket, at once unless it was released while its
// statement runs: then a goroutine of the gate's reads until the statement
// ends, or DrainLimit, and closes it.
func (s *Socket) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	hold := s.released && !s.idle
	ready := s.ready
	s.mu.Unlock()
	if !hold {
		return s.closeNow(false)
	}
	if ready {
		s.gate.connDraining()
	}
	s.gate.Go(func() {
		s.Conn.SetReadDeadline(time.Now().Add(DrainLimit))
		io.Copy(io.Discard, s) // EOF once idle
		s.closeNow(true)
	})
	return nil
}

// closeNow closes the socket for real; drained: after draining (Close).
func (s *Socket) closeNow(drained bool) error {
	err := s.Conn.Close()
	close(s.closed)
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if ready {
		s.gate.connClosed(drained)
	}
	return err
}
