package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if a contender or the harness leaks a goroutine:
// every pool, server, client and database must be closed by the scenario
// that opened it. What runs before the tests is not ours to close: ants
// starts a default pool, with its purge goroutines, in its package init.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// TestQuick runs every scenario in -quick mode and checks that each
// produced a section with a row for every contender, its charts, and a
// report that names every section.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every scenario (about 30 s)")
	}
	// The PostgreSQL scenarios need DATABASE_URL and PGBOUNCER_URL: make
	// test provides them. Without them, those scenarios are left out here,
	// except under CI, where they must run.
	var only, left []string
	for _, s := range scenarios {
		if missing := s.missing(); len(missing) > 0 {
			left = append(left, fmt.Sprintf("%d (%s: %s)", s.ID, s.Name, strings.Join(missing, ", ")))
			continue
		}
		only = append(only, s.Name)
	}
	if len(left) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true, and scenarios %s cannot run: unset variables; use make test", strings.Join(left, ", "))
		}
		t.Logf("leaving out scenarios %s: unset variables", strings.Join(left, ", "))
	}
	dir := t.TempDir()
	o := Options{
		Scenarios: strings.Join(only, ","),
		Out:       filepath.Join(dir, "BENCHMARKS.md"),
		Results:   filepath.Join(dir, "results"),
		Quick:     true,
		Reps:      2,
		Count:     1,
		Level:     300 * time.Millisecond,
		Dir:       ".",
		Command:   "go test",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, o); err != nil {
		t.Fatal(err)
	}

	md, err := os.ReadFile(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	report := string(md)
	for _, s := range scenarios {
		if !slices.Contains(only, s.Name) {
			continue
		}
		if !strings.Contains(report, s.Title) {
			t.Errorf("report has no section %q", s.Title)
		}
	}
	for _, name := range []string{"small_behind_large.svg", "openloop_p99.svg", "classes_interactive.svg", "tenants_b.svg",
		"report.json", "overhead.txt"} {
		fi, err := os.Stat(filepath.Join(o.Results, name))
		if err != nil || fi.Size() == 0 {
			t.Errorf("%s missing or empty: %v", name, err)
		}
	}
	// Every contender appears in every scenario's first table (except
	// where the scenario compares no contenders), with a number in each
	// cell.
	for _, sec := range strings.Split(report, "\n## ")[1:] {
		title, _, _ := strings.Cut(sec, "\n")
		num, _, ok := strings.Cut(title, ". ")
		if !ok { // the goals and contenders sections
			continue
		}
		i := slices.IndexFunc(scenarios, func(s Scenario) bool { return strconv.Itoa(s.ID) == num })
		if i < 0 {
			t.Errorf("section %q: no such scenario", title)
			continue
		}
		rows := tableRows(sec)
		if len(rows) == 0 {
			t.Errorf("section %q has no table", title)
			continue
		}
		want := contenderNames(contenders)
		if scenarios[i].NoContenders {
			want = nil
		}
		for _, c := range want {
			if !slices.ContainsFunc(rows, func(r []string) bool { return slices.Contains(r, c) || strings.Contains(r[0], c) }) {
				if !strings.Contains(sec, "| "+c+" ") {
					t.Errorf("section %q: no row for %s", title, c)
				}
			}
		}
		for _, r := range rows {
			for _, cell := range r {
				if cell == "" || cell == "NaN" {
					t.Errorf("section %q: empty cell in %q", title, r)
				}
			}
		}
	}
	// Scenarios 10 and 11: reqpool with classes refuses no interactive
	// request, since the batch flood fills its own class's queue, not the
	// interactive one; and with flows, no request of tenant B, whose queue
	// holds every client's Fanout. Unlike their latency goals, this does
	// not depend on the machine's timing: it fails only if a request goes
	// to the wrong class or a queue's bound is wrong.
	for _, c := range []struct{ num, row string }{{"10", "reqpool, classes"}, {"11", "reqpool, flow = " + tenantHeader}} {
		var sec string
		for _, s := range strings.Split(report, "\n## ")[1:] {
			if strings.HasPrefix(s, c.num+". ") {
				sec = s
			}
		}
		if sec == "" {
			continue // not run: left out above
		}
		i := slices.IndexFunc(tableRows(sec), func(r []string) bool { return r[0] == c.row })
		if i < 0 {
			t.Errorf("scenario %s: no row %q", c.num, c.row)
			continue
		}
		row := tableRows(sec)[i]
		var refused, sent int
		if _, err := fmt.Sscanf(row[1], "%d of %d", &refused, &sent); err != nil || refused != 0 || sent == 0 {
			t.Errorf("scenario %s, %s: %q refused, want 0 of more than 0 (%v)", c.num, c.row, row[1], err)
		}
		if !strings.Contains(sec, "0 interactive requests refused** met") && !strings.Contains(sec, "0 requests refused** met") {
			t.Errorf("scenario %s: the goal of 0 refused is not met", c.num)
		}
	}
}

// tableRows returns the data rows of the first markdown table in s.
func tableRows(s string) [][]string {
	var rows [][]string
	in := false
	for _, line := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(line, "| ---") || strings.HasPrefix(line, "| --- "):
			in = true
		case in && strings.HasPrefix(line, "|"):
			var cells []string
			for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
				cells = append(cells, strings.TrimSpace(c))
			}
			rows = append(rows, cells)
		case in:
			return rows
		}
	}
	return rows
}

// TestScheduleIsDeterministic checks that every contender sees the same
// arrivals: same seed, same schedule; and that the fan-outs stay in range.
func TestScheduleIsDeterministic(t *testing.T) {
	a := schedule(1, 100, 5*time.Second, 1.2, 64)
	b := schedule(1, 100, 5*time.Second, 1.2, 64)
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different schedules")
	}
	if len(a) < 400 || len(a) > 600 {
		t.Errorf("Poisson(100/s) over 5 s gave %d arrivals", len(a))
	}
	for _, x := range a {
		if x.N < 1 || x.N > 64 {
			t.Fatalf("fan-out %d out of 1..64", x.N)
		}
	}
}
