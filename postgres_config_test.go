package reqpool

import (
	"os"
	"testing"
	"time"
)

// TestPQConfig: OpenPostgres's settings on both DSN forms: one round trip
// per statement, and a connect timeout unless the DSN sets one.
func TestPQConfig(t *testing.T) {
	// The environment can set a timeout too; these cases are about the DSN.
	t.Setenv("PGCONNECT_TIMEOUT", "")
	os.Unsetenv("PGCONNECT_TIMEOUT")
	for _, tc := range []struct {
		dsn  string
		want time.Duration
	}{
		{"postgres://u@db.example:5433/app?sslmode=disable", DefaultConnectTimeout},
		{"postgres://u@db.example/app?connect_timeout=2", 2 * time.Second},
		{"host=db.example dbname=app sslmode=disable", DefaultConnectTimeout},
		{"host=db.example dbname=app connect_timeout=7 binary_parameters=no", 7 * time.Second},
	} {
		cfg, err := pqConfig(tc.dsn)
		if err != nil {
			t.Errorf("pqConfig(%q): %v", tc.dsn, err)
			continue
		}
		if cfg.ConnectTimeout != tc.want || cfg.Host != "db.example" || !cfg.BinaryParameters {
			t.Errorf("pqConfig(%q): host %q, connect timeout %v, binary parameters %v; want db.example, %v, true",
				tc.dsn, cfg.Host, cfg.ConnectTimeout, cfg.BinaryParameters, tc.want)
		}
	}
}
