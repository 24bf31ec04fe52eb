package pgtest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/reqpool/reqpool"
)

// SpareConns runs 10 callers of statements outside Fanout (db.ExecContext,
// as a handler not yet moved to Fanout does) beside a pool of 4 workers,
// idle and then saturated by 8 callers of Fanouts. With Config.SpareConns
// 10, the statements outside Fanout never wait for a connection
// (db.Stats().WaitCount), and their median is about the same beside the
// busy pool as beside the idle one (the log line gives both).
func SpareConns(t *testing.T, open Opener, dsn string) {
	const direct = 10
	p := NewPool(t, reqpool.Config{Workers: 4, SpareConns: direct})
	db := Open(t, open, dsn, p)
	if got := db.Stats().MaxOpenConnections; got != 4+direct {
		t.Fatalf("MaxOpenConnections %d, want Workers+SpareConns = %d", got, 4+direct)
	}
	idle := outside(t, db, direct, 20)

	ctx, stop := context.WithCancel(context.Background())
	var busy sync.WaitGroup
	for range 8 {
		busy.Go(func() {
			for ctx.Err() == nil {
				h, release := p.NewContext(ctx)
				q := reqpool.Exec(db, "SELECT pg_sleep(0.01)")
				reqpool.Fanout(h, q, q, q, q)
				release()
			}
		})
	}
	for p.Stats().Queued == 0 { // saturated: queries wait for the workers
		time.Sleep(time.Millisecond)
	}
	waits := db.Stats().WaitCount
	saturated := outside(t, db, direct, 20)
	waited := db.Stats().WaitCount - waits
	stop()
	busy.Wait()
	if waited != 0 {
		t.Errorf("%d waits for a connection beside the busy pool, want 0: Fanout takes at most Workers, SpareConns the rest", waited)
	}
	t.Logf("%d callers of statements outside Fanout, p50: %v beside an idle pool, %v beside a saturated one (%.2fx); %d waits for a connection",
		direct, idle, saturated, float64(saturated)/float64(idle), waited)
}

// outside runs rounds of n concurrent statements of 5 ms outside Fanout,
// and returns their median latency.
func outside(t *testing.T, db *sqlx.DB, n, rounds int) time.Duration {
	var mu sync.Mutex
	var lat []time.Duration
	for range rounds {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				start := time.Now()
				if _, err := db.ExecContext(context.Background(), "SELECT pg_sleep(0.005)"); err != nil {
					t.Error(err)
				}
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	slices.Sort(lat)
	return lat[len(lat)/2].Round(10 * time.Microsecond)
}
