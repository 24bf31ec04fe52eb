package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reqpool/reqpool"
)

// Outage stops PostgreSQL (REQPOOL_PGCTL stop -m mode: "fast", which
// terminates the backends with 57P01, or "immediate", which kills them and
// breaks their connections) under a load of 16 HTTP callers, keeps the load
// on for 2 s, and starts it again; every request is answered 200 or 503. The app reaches
// PostgreSQL through a TCP forwarder of the test's, as it would through a
// load balancer, which counts the connections the app opens. While the
// database is down, the app must make a few connection attempts a second,
// not thousands, and requests must fail at once with
// reqpool.ErrDBUnavailable (answered 503); once it is back, requests must
// succeed again within a second.
func Outage(t *testing.T, open Opener, mode string) {
	const (
		callers = 16
		down    = 2 * time.Second
	)
	pgctl := Env(t, "REQPOOL_PGCTL")
	u, err := url.Parse(Env(t, "DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	fwd := newForwarder(t, u.Host)
	u.Host = fwd.addr

	p := NewPool(t, reqpool.Config{Workers: 8})
	db := Open(t, open, u.String(), p)
	var unavailable atomic.Int64
	srvURL, c := Serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		var a, b int
		err := reqpool.Fanout(r.Context(), reqpool.Get(db, &a, "SELECT 1"), reqpool.Get(db, &b, "SELECT 2"))
		if errors.Is(err, reqpool.ErrDBUnavailable) {
			unavailable.Add(1)
		}
		reqpool.WriteError(w, r, err)
	})

	type result struct {
		at      time.Time
		status  int
		latency time.Duration
	}
	var mu sync.Mutex // protects results
	var results []result
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				start := time.Now()
				status, _, err := get(context.Background(), c, srvURL, fmt.Sprintf("outage-%d-%d", i, n))
				if err != nil {
					status = -1
				}
				mu.Lock()
				results = append(results, result{start, status, time.Since(start)})
				mu.Unlock()
				if status != http.StatusOK {
					time.Sleep(time.Millisecond) // a client that retries at once, but does not spin
				}
			}
		})
	}
	defer func() { stop(); wg.Wait() }()

	pg := func(args ...string) time.Time {
		t.Helper()
		if out, err := exec.Command(pgctl, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", pgctl, args, err, out)
		}
		return time.Now()
	}
	time.Sleep(300 * time.Millisecond)
	stopped := pg("stop", "-m", mode)
	restarted := false
	defer func() {
		if !restarted { // a failure below: leave the server running for the tests that follow
			exec.Command(pgctl, "start").Run()
		}
	}()
	dialsBefore := fwd.accepted.Load()
	time.Sleep(down)
	dialsDown := fwd.accepted.Load() - dialsBefore
	startedAt := pg("start")
	restarted = true
	time.Sleep(time.Second)
	stop()
	wg.Wait()

	var downLat []time.Duration
	var downOK, downFail int
	recovered := time.Duration(-1)
	for _, r := range results {
		switch {
		case r.at.After(stopped) && r.at.Add(r.latency).Before(startedAt):
			downLat = append(downLat, r.latency)
			if r.status == http.StatusOK {
				downOK++
			} else {
				downFail++
			}
		case r.at.After(startedAt) && r.status == http.StatusOK:
			if d := r.at.Add(r.latency).Sub(startedAt); recovered < 0 || d < recovered {
				recovered = d
			}
		}
	}
	slices.Sort(downLat)
	if len(downLat) == 0 {
		t.Fatal("no request while the database was down")
	}
	p99 := downLat[len(downLat)*99/100]
	perSec := float64(dialsDown) / down.Seconds()
	t.Logf("database down %v under %d callers: %d requests (%d ok, %d failed, %d with ErrDBUnavailable), latency p50 %v p99 %v; %d connections opened (%.1f/s); back in use %v after the server was ready",
		down, callers, len(downLat), downOK, downFail, unavailable.Load(), downLat[len(downLat)/2].Round(10*time.Microsecond), p99.Round(10*time.Microsecond), dialsDown, perSec, recovered.Round(time.Millisecond))
	// The gate allows 4 a second (RetryInterval); 6 leaves room for the
	// attempts already under way when the server went, and catches a
	// second dial per attempt (pgx's own CancelRequest did that: 8.0/s).
	if perSec > 6 {
		t.Errorf("%.1f connection attempts a second while the database was down, want a few (at most 6)", perSec)
	}
	if p99 > 100*time.Millisecond {
		t.Errorf("requests took up to %v (p99) while the database was down, want them to fail at once", p99)
	}
	if unavailable.Load() < int64(downFail)/2 {
		t.Errorf("only %d of %d failures matched ErrDBUnavailable", unavailable.Load(), downFail)
	}
	if recovered < 0 || recovered > time.Second {
		t.Errorf("requests succeeded again %v after the database was back, want within 1s", recovered)
	}
	// The statements that the stop broke (57P01, a reset, an EOF) are
	// transient too: 503, for the client to retry, never 500.
	others := map[int]int{}
	for _, r := range results {
		if r.status != http.StatusOK && r.status != http.StatusServiceUnavailable {
			others[r.status]++
		}
	}
	if len(others) > 0 {
		t.Errorf("requests answered neither 200 nor 503, by status: %v", others)
	}
}

// forwarder is a TCP forwarder to upstream that counts the connections it
// accepts. When upstream refuses, it closes the accepted connection, as a
// load balancer with no healthy backend does.
type forwarder struct {
	addr     string
	accepted atomic.Int64
}

func newForwarder(t *testing.T, upstream string) *forwarder {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{addr: l.Addr().String()}
	var mu sync.Mutex // protects conns
	conns := map[net.Conn]struct{}{}
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			c.Close()
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			if !track(c) {
				return
			}
			wg.Go(func() {
				up, err := net.DialTimeout("tcp", upstream, time.Second)
				if err != nil || !track(up) {
					c.Close()
					return
				}
				done := make(chan struct{})
				go func() { io.Copy(up, c); up.Close(); close(done) }()
				io.Copy(c, up)
				c.Close()
				<-done
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return f
}
