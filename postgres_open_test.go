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

func TestOpenPostgresResults(t *testing.T) {
	for _, tg := range pgtest.Targets(t) {
		t.Run(tg.Name, func(t *testing.T) { pgtest.Results(t, reqpool.OpenPostgres, tg.DSN, 16, 2400) })
	}
}

func TestOpenPostgresHangUpSoak(t *testing.T) {
	for _, tg := range pgtest.Targets(t) {
		t.Run(tg.Name, func(t *testing.T) { pgtest.HangUpSoak(t, reqpool.OpenPostgres, tg.DSN, 1000, 50) })
	}
}

func TestOpenPostgresOutage(t *testing.T) { pgtest.Outage(t, reqpool.OpenPostgres) }

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
