package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
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

	var mu sync.Mutex // protects ended and hungUp
	ended := make(map[string]time.Time, requests)
	hungUp := make(map[string]time.Time, requests)
	var inHandler atomic.Int64
	url, c := Serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		inHandler.Add(1)
		defer inHandler.Add(-1)
		err := reqpool.Fanout(r.Context(), slicesRepeat(reqpool.Exec(db, "SELECT pg_sleep(3)"), 4)...)
		now := time.Now()
		h, _ := reqpool.FromContext(r.Context())
		mu.Lock()
		ended[h.ID()] = now
		mu.Unlock()
		reqpool.WriteError(w, r, err)
	})

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
				ctx, hangUp := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					if _, _, err := get(ctx, c, url, id); err == nil {
						answered.Add(1)
					}
				}()
				time.Sleep(time.Duration(20+rand.IntN(81)) * time.Millisecond)
				mu.Lock()
				hungUp[id] = time.Now()
				mu.Unlock()
				hangUp()
				<-done
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

	var delays []time.Duration
	late := 0
	for id, at := range hungUp {
		end, ok := ended[id]
		if !ok {
			continue // hung up before the handler ran
		}
		d := end.Sub(at)
		delays = append(delays, d)
		if d > limit {
			late++
		}
	}
	slices.Sort(delays)
	if len(delays) == 0 {
		t.Fatal("no handler ran")
	}
	q := func(f float64) time.Duration {
		return delays[int(f*float64(len(delays)-1))].Round(100 * time.Microsecond)
	}
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
	t.Logf("%d requests, %d concurrent, %d reached the handler, %d answered before the hang-up; handler returned after the hang-up: p50 %v, p99 %v, max %v; %d later than %v; %d statements active %v after the last hang-up; %d statements cancelled with %d CancelRequests (%.2f each) and %d pg_cancel_backend, %d connections cut off, %d reused",
		requests, concurrent, len(delays), answered.Load(), q(0.5), q(0.99), q(1), late, limit, active, limit,
		cs.Statements, cs.Requests, perStmt, cs.Signals, cs.CutOffs, cs.Reused)
	if late > 0 {
		t.Errorf("%d handlers returned more than %v after their client hung up (max %v)", late, limit, q(1))
	}
	if active != 0 {
		t.Errorf("%d statements of the soak still active %v after the last hang-up", active, limit)
	}
	if len(delays) < requests/2 {
		t.Errorf("only %d of %d requests reached the handler before the hang-up", len(delays), requests)
	}
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
