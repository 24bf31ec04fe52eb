package pgwire

import (
	"errors"
	"net"
	"syscall"
)

// A dial to a local port on which nothing listens can connect to itself:
// the kernel may pick that very port as the source, and the SYN meets
// itself (a "simultaneous open"). Go's dialer notices, closes the socket
// and tries again, twice; but a TCP socket closed the usual way stays in
// TIME_WAIT for 60 s, and a server whose port lies in the ephemeral range
// then finds it taken when it restarts. So the openers' sockets are
// dialled with DialControl, which makes a close reset the connection
// instead (SO_LINGER 0: no TIME_WAIT), and CheckSelfConnect gives a
// connection that is not to itself the usual close back.

// DialControl is the Control of the openers' net.Dialer: it sets SO_LINGER
// to 0 on each TCP socket before it connects, so that one closed before
// CheckSelfConnect has seen it (by Go's own self-connect check) leaves no
// TIME_WAIT behind. The sockets of CancelRequests, dialled with the same
// dialer, never pass CheckSelfConnect and close with a reset: harmless, as
// SendCancel closes one only after the server has closed its end.
func DialControl(network, _ string, c syscall.RawConn) error {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil
	}
	var err error
	ctlErr := c.Control(func(fd uintptr) {
		err = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	})
	return errors.Join(ctlErr, err)
}

// CheckSelfConnect closes c and returns an error if it is a TCP connection
// to itself; the close resets it (see DialControl). Otherwise it gives a TCP
// connection the usual close back, and returns it.
func CheckSelfConnect(c net.Conn) (net.Conn, error) {
	l, r := c.LocalAddr(), c.RemoteAddr()
	if l != nil && r != nil && l.Network() == "tcp" && l.String() == r.String() {
		c.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: r, Err: errors.New("connected to itself: nothing listens there")}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetLinger(-1); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}
