package pgwire

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// TestSelfConnectLeavesNoTimeWait dials, in a network namespace of its own
// whose ephemeral port range is one port, that very port on 127.0.0.1,
// where nothing listens: every attempt connects to itself. Dialled the
// openers' way (DialControl, CheckSelfConnect), the dial fails and no
// socket is left in TIME_WAIT on the port; dialled with a plain net.Dialer,
// the sockets that Go's own check closed are there, holding the port that
// a server restarting on it would need.
//
// It needs root (for unshare(1) and the namespace's sysctl); without root
// it skips, and under CI=true it fails.
func TestSelfConnectLeavesNoTimeWait(t *testing.T) {
	if os.Getenv("REQPOOL_NETNS_CHILD") != "" {
		selfConnectInNamespace(t)
		return
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for a network namespace of its own, and CI=true")
		}
		t.Skip("needs root for a network namespace of its own")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare(1) (util-linux): %v", err)
	}
	cmd := exec.Command(unshare, "--net", os.Args[0], "-test.run", "^TestSelfConnectLeavesNoTimeWait$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "REQPOOL_NETNS_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in a network namespace of its own: %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "selfconnect_test.go") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

// selfConnectInNamespace is the test proper, in the namespace.
func selfConnectInNamespace(t *testing.T) {
	if err := loopbackUp(); err != nil {
		t.Fatalf("bring lo up: %v", err)
	}
	const port = 47123
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", fmt.Appendf(nil, "%d %d", port, port), 0o644); err != nil {
		t.Fatalf("narrow the ephemeral range: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	d := &net.Dialer{Control: DialControl}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err == nil {
		c, err = CheckSelfConnect(c)
	}
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: connected, want an error (nothing listens)", addr)
	}
	if n := timeWait(t, port); n != 0 {
		t.Errorf("dialled as the openers do: %d sockets in TIME_WAIT on port %d, want 0 (err %v)", n, port, err)
	}
	dialErr := err

	// The same dial without DialControl, to show that the check can fail.
	var plain net.Dialer
	c, err = plain.DialContext(context.Background(), "tcp", addr)
	if err == nil {
		c.Close()
	}
	n := timeWait(t, port)
	if n == 0 {
		t.Errorf("a plain dial left no socket in TIME_WAIT either: the test shows nothing")
	}
	t.Logf("a dial of port %d from the range of that one port: the openers' dialler failed (%v) and left 0 sockets in TIME_WAIT, a plain net.Dialer %d", port, dialErr, n)
}

// timeWait counts the TCP sockets in TIME_WAIT whose local port is port.
func timeWait(t *testing.T, port int) int {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "06" { // st 06: TIME_WAIT
			continue
		}
		if i := strings.LastIndexByte(f[1], ':'); i >= 0 {
			if p, err := strconv.ParseUint(f[1][i+1:], 16, 16); err == nil && int(p) == port {
				n++
			}
		}
	}
	return n
}

// loopbackUp sets the IFF_UP flag of lo, which a new network namespace
// starts without (ip(8) need not be installed).
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr struct {
		name  [syscall.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	ifr.flags |= syscall.IFF_UP
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	return nil
}
