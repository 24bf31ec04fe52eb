package store

import (
	"os"
	"testing"
	"time"
)

func TestConnConfig(t *testing.T) {
	// The environment can set a timeout too; these cases are about the DSN.
	t.Setenv("PGCONNECT_TIMEOUT", "")
	os.Unsetenv("PGCONNECT_TIMEOUT")
	for _, tc := range []struct {
		dsn  string
		want time.Duration
	}{
		{"postgres://u@db.example:5433/app?sslmode=disable", defaultConnectTimeout},
		{"postgres://u@db.example/app?connect_timeout=2", 2 * time.Second},
		{"host=db.example dbname=app sslmode=disable", defaultConnectTimeout},
		{"host=db.example dbname=app connect_timeout=7", 7 * time.Second},
	} {
		cfg, err := connConfig(tc.dsn)
		if err != nil {
			t.Errorf("connConfig(%q): %v", tc.dsn, err)
			continue
		}
		if cfg.ConnectTimeout != tc.want || cfg.Host != "db.example" {
			t.Errorf("connConfig(%q): host %q, connect timeout %v; want db.example, %v", tc.dsn, cfg.Host, cfg.ConnectTimeout, tc.want)
		}
	}
}
