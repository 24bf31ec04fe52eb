package reqpool_test

import (
	"errors"
	"testing"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/internal/pgtest"
)

// The scenarios of internal/pgtest with lib/pq, through OpenPostgres,
// directly and through PgBouncer in transaction mode; reqpgx runs the same
// ones with pgx.

func TestOpenPostgres(t *testing.T) { pgtest.Suite(t, reqpool.OpenPostgres) }

// TestOpenPostgresBadInput: a DSN lib/pq cannot parse or accept and a nil
// pool are errors, not panics.
func TestOpenPostgresBadInput(t *testing.T) {
	p, err := reqpool.New(reqpool.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, dsn := range []string{"postgres://x@%zz", "sslmode=bogus", "port=notanumber"} {
		if db, err := reqpool.OpenPostgres(dsn, p); err == nil {
			db.Close()
			t.Errorf("OpenPostgres(%q) = nil error", dsn)
		}
	}
	if _, err := reqpool.OpenPostgres("postgres://x@127.0.0.1/x", nil); !errors.Is(err, reqpool.ErrInvalidConfig) {
		t.Errorf("nil pool: %v, want ErrInvalidConfig", err)
	}
}
