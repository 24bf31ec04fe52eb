// Package reqtest holds the test helpers that the modules of this
// repository share: a pool shut down with its test, and a query that
// sleeps. The root package's own tests cannot import it (it imports the
// root package), and keep their own in main_test.go.
package reqtest

import (
	"context"
	"testing"
	"time"

	"github.com/reqpool/reqpool"
)

// NewPool returns a pool that is shut down when the test ends, failing the
// test if that takes over 10 s or New refuses cfg.
func NewPool(t testing.TB, cfg reqpool.Config) *reqpool.Pool {
	t.Helper()
	p, err := reqpool.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return p
}

// Sleep is a query that takes d, or returns early with its context's error.
func Sleep(d time.Duration) reqpool.Query {
	return reqpool.Func(func(ctx context.Context) error {
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
