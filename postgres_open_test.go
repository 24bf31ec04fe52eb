package reqpool_test

import (
	"errors"
	"testing"
	"time"

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

// BenchmarkAdaptivePhases measures the adaptive workload (pgtest.RunPhases:
// 16 clients' Fanouts of 2 and 4 clients' of 16 through a real server,
// phases wait, CPU, wait of 8 s each) on an adaptive pool of 64 workers at
// most and on fixed pools of 2, 4, 8 and 64, and reports each phase's
// queries/s and small-request p99. One iteration is the whole run:
//
//	scripts/with-postgres.sh --for tests go test -run '^$' -bench AdaptivePhases -benchtime 1x
func BenchmarkAdaptivePhases(b *testing.B) {
	phases := []pgtest.Phase{{Name: "wait", SQL: pgtest.WaitSQL, D: 8 * time.Second}, {Name: "cpu", SQL: pgtest.CPUSQL, D: 8 * time.Second},
		{Name: "wait2", SQL: pgtest.WaitSQL, D: 8 * time.Second}}
	for _, c := range []struct {
		name string
		cfg  reqpool.Config
	}{
		{"adaptive64", reqpool.Config{Workers: 64, Adaptive: true, MaxFanout: 16}},
		{"fixed2", reqpool.Config{Workers: 2, MaxFanout: 16}}, {"fixed4", reqpool.Config{Workers: 4, MaxFanout: 16}},
		{"fixed6", reqpool.Config{Workers: 6, MaxFanout: 16}}, {"fixed8", reqpool.Config{Workers: 8, MaxFanout: 16}},
		{"fixed64", reqpool.Config{Workers: 64, MaxFanout: 16}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				res := pgtest.RunPhases(b, reqpool.OpenPostgres, pgtest.Env(b, "DATABASE_URL"), c.cfg, phases)
				for _, r := range res {
					b.Log(r)
					b.ReportMetric(r.QPS, r.Name+"-queries/s")
					b.ReportMetric(float64(r.SmallP99)/1e6, r.Name+"-small-p99-ms")
				}
			}
		})
	}
}
