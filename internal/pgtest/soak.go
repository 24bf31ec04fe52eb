package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reqpool/reqpool"
)

// HangUpSoak sends requests for a Fanout of 4 × pg_sleep(3), concurrent at
// a time, whose clients hang up after 20 to 100 ms. Every handler must
// return within 500 ms of its client's hang-up, and 500 ms after the last
// hang-up no statement of the soak may be active on the server. A cancel
// that PostgreSQL ignores (it reached the backend before the statement)
// shows here as a handler held for 3 s.
func HangUpSoak(t *testing.T, open Opener, dsn string, requests, concurrent int) {
	const limit = 500 * time.Millisecond
	p := NewPool(t, reqpool.Config{Workers: 16})
	db := Open(t, open, dsn, p)
	mon := NewMonitor(t)
	prefix := UniqueID("soak")
	before := reqpool.Cancels(db.DB)

	var mu sync.Mutex // protects ended, noticed and hungUp
	ended := make(map[string]time.Time, requests)
	noticed := make(map[string]time.Time, requests) // when the handler's context ended
	hungUp := make(map[string]time.Time, requests)
	var inHandler atomic.Int64
	url, _ := Serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		inHandler.Add(1)
		defer inHandler.Add(-1)
		h, _ := reqpool.FromContext(r.Context())
		stop := context.AfterFunc(r.Context(), func() {
			now := time.Now()
			mu.Lock()
			noticed[h.ID()] = now
			mu.Unlock()
		})
		defer stop()
		err := reqpool.Fanout(r.Context(), slicesRepeat(reqpool.Exec(db, "SELECT pg_sleep(3)"), 4)...)
		now := time.Now()
		mu.Lock()
		ended[h.ID()] = now
		mu.Unlock()
		reqpool.WriteError(w, r, err)
	})

	addr := strings.TrimPrefix(url, "http://")
	var next, answered atomic.Int64
	var clients sync.WaitGroup
	for range concurrent {
		clients.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(requests) {
					return
				}
				id := fmt.Sprintf("%s-%d", prefix, i)
				at, ok, err := callAndHangUp(addr, id, time.Duration(20+rand.IntN(81))*time.Millisecond)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					answered.Add(1)
				}
				mu.Lock()
				hungUp[id] = at
				mu.Unlock()
			}
		})
	}
	clients.Wait()
	var last time.Time
	for _, at := range hungUp {
		last = maxTime(last, at)
	}
	// The handlers have until 500 ms after the last hang-up; then none of
	// the soak's statements may be left on the server.
	time.Sleep(time.Until(last.Add(limit)))
	active := mon.Active(prefix)
	for wait := time.Now(); inHandler.Load() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Since(wait) > 10*time.Second {
			t.Fatalf("%d handlers still running 10 s after the soak", inHandler.Load())
		}
	}
	mu.Lock()
	defer mu.Unlock()

	var delays, notices []time.Duration
	var lateOnes []string
	late := 0
	for id, at := range hungUp {
		end, ok := ended[id]
		if !ok {
			continue // hung up before the handler ran
		}
		d := end.Sub(at)
		delays = append(delays, d)
		if n, ok := noticed[id]; ok {
			notices = append(notices, n.Sub(at))
		}
		if d > limit {
			late++
			seen := "never"
			if n, ok := noticed[id]; ok {
				seen = n.Sub(at).Round(time.Millisecond).String()
			}
			lateOnes = append(lateOnes, fmt.Sprintf("%s: context ended %s after the hang-up, handler returned %s after", id, seen, d.Round(time.Millisecond)))
		}
	}
	slices.Sort(delays)
	if len(delays) == 0 {
		t.Fatal("no handler ran")
	}
	slices.Sort(notices)
	q := func(f float64) time.Duration { return quantile(delays, f) }
	cs := reqpool.Cancels(db.DB)
	cs.Statements -= before.Statements
	cs.Requests -= before.Requests
	cs.Signals -= before.Signals
	cs.CutOffs -= before.CutOffs
	cs.Reused -= before.Reused
	perStmt := 0.0
	if cs.Statements > 0 {
		perStmt = float64(cs.Requests) / float64(cs.Statements)
	}
	t.Logf("%d requests, %d concurrent, %d reached the handler, %d answered before the hang-up; handler returned after the hang-up: p50 %v, p99 %v, max %v (its context ended: p50 %v, max %v); %d later than %v; %d statements active %v after the last hang-up; %d statements cancelled with %d CancelRequests (%.2f each) and %d pg_cancel_backend, %d connections cut off, %d reused",
		requests, concurrent, len(delays), answered.Load(), q(0.5), q(0.99), q(1), quantile(notices, 0.5), quantile(notices, 1), late, limit, active, limit,
		cs.Statements, cs.Requests, perStmt, cs.Signals, cs.CutOffs, cs.Reused)
	if late > 0 {
		t.Errorf("%d handlers returned more than %v after their client hung up (max %v): %v", late, limit, q(1), lateOnes)
	}
	if active != 0 {
		t.Errorf("%d statements of the soak still active %v after the last hang-up", active, limit)
	}
	if len(delays) < requests/2 {
		t.Errorf("only %d of %d requests reached the handler before the hang-up", len(delays), requests)
	}
}

// callAndHangUp sends GET / with the request id id to the server at addr,
// over a TCP connection of its own, and closes the connection after d
// unless the answer has begun by then. It returns when it closed it: the
// hang-up, as the server sees it, and whether the answer had begun.
//
// A client of its own rather than an http.Client, whose Transport closes
// the connection of a request whose context ends on goroutines of its own:
// under the race detector, on 2 cores, with 50 clients hanging up at once,
// that close came tens of ms (up to 200) after the context ended, and the
// soak would charge that delay to the handler.
func callAndHangUp(addr, id string, d time.Duration) (hungUp time.Time, answered bool, err error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return time.Time{}, false, err
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n%s: %s\r\n\r\n", addr, reqpool.RequestIDHeader, id); err != nil {
		c.Close()
		return time.Time{}, false, err
	}
	c.SetReadDeadline(time.Now().Add(d))
	n, _ := c.Read(make([]byte, 1))
	hungUp = time.Now()
	return hungUp, n > 0, c.Close()
}

// quantile returns the f-quantile of sorted ds, or 0 if it is empty.
func quantile(ds []time.Duration, f float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[int(f*float64(len(ds)-1))].Round(100 * time.Microsecond)
}

func slicesRepeat(q reqpool.Query, n int) []reqpool.Query {
	qs := make([]reqpool.Query, n)
	for i := range qs {
		qs[i] = q
	}
	return qs
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
