package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// replica is one process of the example app (examples/dashboard) that a
// scenario started, with its output.
type replica struct {
	cmd  *exec.Cmd
	out  *capped       // its stdout and stderr
	URL  string        // http://127.0.0.1:PORT, from its banner, once ready
	done chan struct{} // closed once the process has exited
	err  error         // what cmd.Wait returned; read after done
	stop func() error  // terminate, once: see Stop
}

// bannerRE finds the address in the banner the app prints once it listens.
var bannerRE = regexp.MustCompile(`dashboard listening on (http://\S+)`)

// startReplica starts the app built at bin, listening on a free loopback
// port, with args after -addr. Stop it with Stop, whatever happens.
func startReplica(bin string, args ...string) (*replica, error) {
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	r := &replica{cmd: cmd, out: &capped{max: 256 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.out, r.out
	stopWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	r.stop = sync.OnceValue(r.terminate)
	return r, nil
}

// ready waits until the replica prints its banner, and sets URL.
func (r *replica) ready(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := bannerRE.FindSubmatch(r.out.Bytes()); m != nil {
			r.URL = string(m[1])
			return nil
		}
		select {
		case <-r.done:
			return fmt.Errorf("exited before listening (%v):\n%s", r.err, r.out.Bytes())
		case <-ctx.Done():
			return fmt.Errorf("no banner after %v: %w\n%s", timeout, ctx.Err(), r.out.Bytes())
		case <-tick.C:
		}
	}
}

// stopGrace is how long Stop waits after SIGTERM before it kills: the
// app's graceful shutdown gives its requests 10 s.
const stopGrace = 15 * time.Second

// Stop ends the process, gracefully: SIGTERM, then SIGKILL if it has not
// exited within stopGrace. It returns nil for a clean exit (status 0 after
// SIGTERM). Calling it again returns the same.
func (r *replica) Stop() error { return r.stop() }

func (r *replica) terminate() error {
	select {
	case <-r.done:
		return fmt.Errorf("exited on its own before SIGTERM (%v):\n%s", r.err, r.out.Bytes())
	default:
	}
	// An error here means that the process has just exited: done says so.
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(stopGrace):
		r.cmd.Process.Kill()
		<-r.done
		return fmt.Errorf("still running %v after SIGTERM: killed", stopGrace)
	}
	if r.err != nil {
		return fmt.Errorf("after SIGTERM: %v\n%s", r.err, r.out.Bytes())
	}
	return nil
}

// capped is a bytes.Buffer safe for concurrent use that keeps the first
// max bytes written to it and drops the rest.
type capped struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Bytes returns a copy of what was kept.
func (c *capped) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}
