package reqpgx_test

import (
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/internal/pgtest"
	"github.com/reqpool/reqpool/reqpgx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The scenarios of internal/pgtest with pgx, through Open, directly and
// through PgBouncer in transaction mode; the root module runs the same ones
// with lib/pq.

func TestOpen(t *testing.T) { pgtest.Suite(t, reqpgx.Open) }

// TestOpenBadInput: a DSN pgx cannot parse and a nil pool are errors, not
// panics.
func TestOpenBadInput(t *testing.T) {
	p, err := reqpool.New(reqpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, dsn := range []string{"postgres://x@%zz", "port=notanumber", "postgres://x@h/db?connect_timeout=abc", "postgres://x@h/db?default_query_exec_mode=nope"} {
		if db, err := reqpgx.Open(dsn, p); err == nil {
			db.Close()
			t.Errorf("Open(%q) = nil error", dsn)
		}
	}
	if _, err := reqpgx.Open("postgres://x@127.0.0.1/x", nil); !errors.Is(err, reqpool.ErrInvalidConfig) {
		t.Errorf("nil pool: %v, want ErrInvalidConfig", err)
	}
}
