package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMerge checks -merge: a later run's sections replace those of the same
// scenario and join the others in ID order, the rerun is recorded (and an
// earlier rerun keeps only what is still its own), and the merged report
// survives its JSON unchanged and renders every section.
func TestMerge(t *testing.T) {
	at := time.Date(2026, 11, 24, 17, 0, 0, 0, time.UTC)
	report := func(quick bool, rev string, ids ...int) *Report {
		r := &Report{
			Machine:  Machine{CPU: "cpu", NumCPU: 2, GOMAXPROCS: 2, OSArch: "linux/amd64", Versions: map[string]string{reqpoolModule: rev}},
			Options:  Options{Quick: quick, Command: "go run . " + rev},
			Started:  at,
			Finished: at.Add(time.Minute),
		}
		for _, id := range ids {
			r.Sections = append(r.Sections, &Section{ID: id, Title: "scenario", Setup: rev})
		}
		at = at.Add(time.Hour)
		return r
	}
	base := report(false, "first", 1, 6, 7)
	if err := base.canMerge(report(true, "quick", 8)); err == nil {
		t.Error("canMerge accepted a quick run into a full one")
	}
	other := report(false, "elsewhere", 8)
	other.Machine.NumCPU = 8
	if err := base.canMerge(other); err == nil {
		t.Error("canMerge accepted a run from another machine")
	}

	second := report(false, "second", 8, 6)
	second.Machine.Versions["github.com/jackc/pgx/v5"] = "v5.12.0"
	if err := base.canMerge(second); err != nil {
		t.Fatal(err)
	}
	base.merge(second)
	base.merge(report(false, "third", 8, 9))

	var got []string
	for _, s := range base.Sections {
		got = append(got, s.Setup)
	}
	if want := []string{"first", "second", "first", "third", "third"}; !slices.Equal(got, want) {
		t.Errorf("sections 1, 6, 7, 8, 9 come from %q, want %q", got, want)
	}
	if len(base.Reruns) != 2 || !slices.Equal(base.Reruns[0].Scenarios, []int{6}) || !slices.Equal(base.Reruns[1].Scenarios, []int{8, 9}) {
		t.Errorf("reruns %+v, want second: [6], third: [8 9]", base.Reruns)
	}
	if base.Machine.Versions[reqpoolModule] != "first" || base.Machine.Versions["github.com/jackc/pgx/v5"] != "v5.12.0" {
		t.Errorf("versions %v: want the first run's reqpool, and pgx from the second", base.Machine.Versions)
	}

	base.Sections[0].Raw = struct{ Z, A int }{1, 2} // fields out of alphabetical order
	dir := t.TempDir()
	path := filepath.Join(dir, "report.json")
	if err := base.writeJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := readReport(path)
	if err != nil {
		t.Fatal(err)
	}
	// What is read back is written back byte for byte, raw data included.
	again := filepath.Join(dir, "again.json")
	if err := back.writeJSON(again); err != nil {
		t.Fatal(err)
	}
	if a, b := mustRead(t, path), mustRead(t, again); a != b {
		t.Errorf("report.json changed on a round trip:\n%s\n---\n%s", a, b)
	}
	var b strings.Builder
	back.render(&b, ".")
	md := b.String()
	for _, want := range []string{"## 1. scenario", "## 9. scenario", "| re-measured later: scenario 6 | `go run . second`",
		"| re-measured later: scenarios 8, 9 | `go run . third`"} {
		if !strings.Contains(md, want) {
			t.Errorf("merged report lacks %q", want)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
