package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/reqpool/reqpool"
)

// CancelKeepsConnection cancels, 20 times, a statement running on one
// dedicated connection (a *sql.Conn, which database/sql never resets), and
// runs another statement on it after each: the cancel must land, no
// connection may be cut off, none of the cancels may reach the next
// statement, and each must cost fewer than 2 CancelRequests.
func CancelKeepsConnection(t *testing.T, open Opener, dsn string) {
	const rounds = 20
	p := NewPool(t, reqpool.Config{Workers: 2})
	db := Open(t, open, dsn, p)
	mon := NewMonitor(t)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := reqpool.Cancels(db.DB)
	for i := range rounds {
		prefix := UniqueID("keep")
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := conn.ExecContext(ctx, "SELECT pg_sleep(5) /*request_id='"+prefix+"'*/")
			errc <- err
		}()
		mon.WaitFor(prefix, func(n int) bool { return n == 1 }, 5*time.Second)
		cancel()
		if err := <-errc; err == nil {
			t.Fatalf("round %d: the cancelled statement succeeded", i)
		}
		var one int
		if err := conn.QueryRowContext(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("round %d: the statement after the cancel: %d, %v", i, one, err)
		}
		if n := mon.Active(prefix); n != 0 {
			t.Fatalf("round %d: %d statements still active after the cancel", i, n)
		}
	}
	after := reqpool.Cancels(db.DB)
	stmts, reqs, signals := after.Statements-before.Statements, after.Requests-before.Requests, after.Signals-before.Signals
	cut, kept := after.CutOffs-before.CutOffs, after.Reused-before.Reused
	t.Logf("%d statements cancelled: %d CancelRequests, %d pg_cancel_backend, %d cut off, %d connections kept", stmts, reqs, signals, cut, kept)
	if stmts != rounds || cut != 0 || kept != rounds {
		t.Errorf("%d statements cancelled, %d cut off, %d kept; want %d, 0, %d", stmts, cut, kept, rounds, rounds)
	}
	if reqs >= 2*rounds {
		t.Errorf("%d CancelRequests for %d statements, want fewer than 2 each", reqs, rounds)
	}
}
