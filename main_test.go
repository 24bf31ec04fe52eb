package reqpool

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newPool returns a pool that is shut down when the test ends, failing the
// test if that does not leave it idle.
func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if s := p.Stats(); s.Running != 0 || s.Queued != 0 {
			t.Errorf("after Shutdown: %+v", s)
		}
	})
	return p
}

// handleCtx returns a context with a fresh handle onto p, released when the
// test ends.
func handleCtx(t testing.TB, p *Pool) context.Context {
	ctx, release := p.NewContext(context.Background())
	t.Cleanup(release)
	return ctx
}

// sleep is a query that takes d, or returns early with the context's error.
func sleep(d time.Duration) Query {
	return Func(func(ctx context.Context) error {
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-tm.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// gauge tracks how many queries execute at once and the most there ever were.
type gauge struct{ now, peak atomic.Int64 }

func (g *gauge) enter() {
	n := g.now.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (g *gauge) exit() { g.now.Add(-1) }

// repeat returns n copies of q.
func repeat(n int, q Query) []Query {
	qs := make([]Query, n)
	for i := range qs {
		qs[i] = q
	}
	return qs
}

// closedForTest reports whether Shutdown has closed p.
func (p *Pool) closedForTest() bool {
	return p.sched.Closed()
}
