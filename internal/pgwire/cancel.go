package pgwire

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"time"
)

// The timing of Chase. A CancelRequest reaches a backend as a signal, which
// PostgreSQL discards when the backend is not executing a statement: when it
// arrives before the backend has read the statement, or between the round
// trips of one. Both drivers send one CancelRequest and then wait for the
// statement to end, so such a lost cancel holds the caller (and the server)
// for the statement's whole run. Sending it again is harmless, and it lands
// once the backend executes.
const (
	// RetryCancel is the time between two CancelRequests for one statement.
	// Most statements end within a millisecond of the first, so retries are
	// rare; each costs the server a short-lived connection.
	RetryCancel = 25 * time.Millisecond

	// CutOff is how long a statement may outlive its context before the
	// client closes its connection, so that the caller returns whatever the
	// server does. Chase sends AfterCutOff more CancelRequests after that,
	// for the backend of a direct connection, which would not notice the
	// closed socket until it next writes.
	CutOff      = 250 * time.Millisecond
	AfterCutOff = 2

	// cancelTimeout bounds one CancelRequest, dial included.
	cancelTimeout = time.Second
)

// Chase keeps a statement whose context has ended from running on: on a
// goroutine of the gate's, it calls cancel every RetryCancel until done is
// closed (the statement ended). If the statement is still running after
// CutOff, it calls cutOff, which must close the client's connection, and
// cancels AfterCutOff more times. Each cancel runs on a goroutine of its
// own, so that a cancel that hangs (an unreachable server, which is when
// the cut-off matters) delays neither the next one nor the cut-off; the
// chase itself ends within CutOff + AfterCutOff × RetryCancel. The driver
// has sent the first CancelRequest already, or sends it beside Chase.
//
// The connection must be discarded afterwards, never reused: a CancelRequest
// still on its way when the statement ended could otherwise cancel the next
// statement on it.
func (g *Gate) Chase(done <-chan struct{}, cancel, cutOff func()) {
	g.Go(func() {
		tick := time.NewTicker(RetryCancel)
		defer tick.Stop()
		deadline := time.NewTimer(CutOff)
		defer deadline.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				g.Go(cancel)
			case <-deadline.C:
				cutOff()
				for range AfterCutOff {
					<-tick.C
					g.Go(cancel)
				}
				return
			}
		}
	})
}

// cancelRequestCode is the CancelRequest message's code (1234 << 16 | 5678).
const cancelRequestCode = 80877102

// SendCancel sends a CancelRequest for the backend (pid, key) to the server
// at network, address: PostgreSQL, or PgBouncer, which passes it on to the
// server connection that its client is linked to. It waits for the server to
// close the connection, which it does once it has read the request. It is
// sent in the clear, as lib/pq and libpq before 17 do: the server reads a
// CancelRequest before any authentication or pg_hba.conf check.
func SendCancel(dial func(ctx context.Context, network, address string) (net.Conn, error), network, address string, pid uint32, key []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	c, err := dial(ctx, network, address)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(cancelTimeout))
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
