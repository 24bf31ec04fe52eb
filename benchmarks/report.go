package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is everything BENCHMARKS.md shows.
type Report struct {
	Machine  Machine
	Options  Options
	Started  time.Time
	Finished time.Time
	Sections []*Section
	// Reruns are the later runs whose sections replaced or joined the
	// first run's (-merge), oldest first.
	Reruns []Rerun `json:",omitempty"`
}

// Rerun is a later run of some scenarios, merged into a report.
type Rerun struct {
	Scenarios []int  // the IDs of the sections it measured
	Command   string // how it was started
	Started   time.Time
	Finished  time.Time
	Revision  string // the reqpool it measured, as Machine.Versions names it
	GoVersion string
}

// Machine describes where the benchmarks ran.
type Machine struct {
	CPU        string            // model name from /proc/cpuinfo, if any
	NumCPU     int               // runtime.NumCPU
	GOMAXPROCS int               // runtime.GOMAXPROCS(0)
	GoVersion  string            // runtime.Version
	OSArch     string            // GOOS/GOARCH
	Versions   map[string]string // module path -> version, for reqpool and the peers
}

// Section is one scenario's part of the report.
type Section struct {
	ID      int
	Name    string
	Title   string
	Setup   string  // markdown: what the scenario does, and how to read it
	Tables  []Table // one or more result tables
	Charts  []Chart
	Goals   []Goal // the goals that this scenario checks
	Notes   []string
	Raw     any           // raw measurements, written to results.json
	Elapsed time.Duration // how long the scenario ran
}

// UnmarshalJSON reads a section written by writeJSON, keeping Raw as the
// JSON it was: a report read back (-render, -merge) writes its raw data
// unchanged, fields in their order, rather than as maps.
func (s *Section) UnmarshalJSON(b []byte) error {
	type plain Section // no methods: no recursion
	var v struct {
		plain
		Raw json.RawMessage
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Section(v.plain)
	s.Raw = v.Raw
	return nil
}

// Table is a markdown table. Columns after the first are right-aligned.
type Table struct {
	Caption string
	Header  []string
	Rows    [][]string
}

// Chart is an image written to the results directory.
type Chart struct {
	File string // path of the SVG, as written
	Alt  string
}

// Goal is one of the goals for reqpool, with the number measured.
type Goal struct {
	Goal     string // what reqpool must do
	Measured string // the number(s), with the baseline where there is one
	Met      bool
	Note     string // when missed: why, as far as the run can tell
}

func newReport(o Options) *Report {
	return &Report{Machine: machine(), Options: o, Started: time.Now()}
}

// machine gathers the machine description.
func machine() Machine {
	m := Machine{
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		OSArch:     runtime.GOOS + "/" + runtime.GOARCH,
		Versions:   map[string]string{},
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/alitto/pond/v2", "github.com/panjf2000/ants/v2", "golang.org/x/sync",
				"github.com/lib/pq", "github.com/jackc/pgx/v5":
				m.Versions[d.Path] = d.Version
			}
		}
	}
	m.Versions[reqpoolModule] = reqpoolRevision()
	return m
}

// reqpoolModule is the module under test, as Machine.Versions names it.
const reqpoolModule = "github.com/reqpool/reqpool"

// reqpoolRevision names the reqpool under test: the benchmarks module
// replaces it with the working tree around it, so its version is the tree's
// commit, marked when the tree has uncommitted changes.
func reqpoolRevision() string {
	out, err := exec.Command("git", "-C", "..", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "working tree"
	}
	rev := "commit " + strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", "..", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		rev += " + uncommitted changes"
	}
	return rev
}

// writeJSON writes the whole report, raw measurements included, as JSON:
// the data behind BENCHMARKS.md, and what -render reads back.
func (r *Report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// readReport reads a report written by writeJSON.
func readReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// canMerge returns an error when later's sections cannot join r's: a quick
// run and a measurement, or runs on different machines, do not compare.
func (r *Report) canMerge(later *Report) error {
	a, b := r.Machine, later.Machine
	switch {
	case r.Options.Quick != later.Options.Quick:
		return fmt.Errorf("quick run and full run: quick is %v there, %v here", r.Options.Quick, later.Options.Quick)
	case a.CPU != b.CPU || a.NumCPU != b.NumCPU || a.GOMAXPROCS != b.GOMAXPROCS || a.OSArch != b.OSArch:
		return fmt.Errorf("measured on another machine (%s, %d cores, GOMAXPROCS %d, %s; here %s, %d, %d, %s)",
			a.CPU, a.NumCPU, a.GOMAXPROCS, a.OSArch, b.CPU, b.NumCPU, b.GOMAXPROCS, b.OSArch)
	}
	return nil
}

// merge puts later's sections into r, in place of r's sections of the same
// scenarios, and records later as a rerun. Versions that r does not name yet
// (a driver that only later's scenarios use) are taken from later.
func (r *Report) merge(later *Report) {
	var ids []int
	for _, s := range later.Sections {
		ids = append(ids, s.ID)
		r.Sections = slices.DeleteFunc(r.Sections, func(old *Section) bool { return old.ID == s.ID })
		r.Sections = append(r.Sections, s)
	}
	slices.SortFunc(r.Sections, func(a, b *Section) int { return a.ID - b.ID })
	// An earlier rerun keeps only the sections that are still its own.
	kept := r.Reruns[:0]
	for _, run := range r.Reruns {
		run.Scenarios = slices.DeleteFunc(run.Scenarios, func(id int) bool { return slices.Contains(ids, id) })
		if len(run.Scenarios) > 0 {
			kept = append(kept, run)
		}
	}
	r.Reruns = append(kept, Rerun{
		Scenarios: ids, Command: later.Options.Command, Started: later.Started, Finished: later.Finished,
		Revision: later.Machine.Versions[reqpoolModule], GoVersion: later.Machine.GoVersion,
	})
	if r.Machine.Versions == nil {
		r.Machine.Versions = map[string]string{}
	}
	for k, v := range later.Machine.Versions {
		if _, ok := r.Machine.Versions[k]; !ok {
			r.Machine.Versions[k] = v
		}
	}
}

// writeMarkdown renders the report to path.
func (r *Report) writeMarkdown(path string) error {
	var b strings.Builder
	dir := filepath.Dir(path)
	r.render(&b, dir)
	md := fileLinkRE.ReplaceAllStringFunc(b.String(), func(m string) string {
		return "(" + relLink(dir, fileLinkRE.FindStringSubmatch(m)[1]) + ")"
	})
	return os.WriteFile(path, []byte(md), 0o644)
}

// fileLink returns a placeholder link target for path, which writeMarkdown
// makes relative to wherever the report is written: scenarios write their
// markdown before anyone knows where it will go.
func fileLink(path string) string {
	return "@file:" + absPath(path)
}

var fileLinkRE = regexp.MustCompile(`\(@file:([^)]+)\)`)

// relLink returns target relative to dir, with forward slashes, or target
// itself if it cannot be made relative.
func relLink(dir, target string) string {
	absDir, err1 := filepath.Abs(dir)
	absTarget, err2 := filepath.Abs(target)
	if err1 != nil || err2 != nil {
		return filepath.ToSlash(target)
	}
	rel, err := filepath.Rel(absDir, absTarget)
	if err != nil {
		return filepath.ToSlash(target)
	}
	return filepath.ToSlash(rel)
}

// render writes the markdown; links to charts are made relative to dir, the
// report's directory.
func (r *Report) render(b *strings.Builder, dir string) {
	m := r.Machine
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }

	p("# Benchmarks\n\n")
	p("<!-- Generated by benchmarks/ (`make bench`); do not edit by hand. -->\n\n")
	if r.Options.Quick {
		p("> **Quick run** (`-quick`): tiny sizes that check the harness, not a measurement. Do not quote these numbers.\n\n")
	}
	p("reqpool against its peers, measured side by side in one run: the same scenarios, the same simulated queries, ")
	p("the same real `net/http` server and client on loopback, each library behind a small adapter ")
	p("([`benchmarks/adapters.go`](%s)).\n\n", fileLink(filepath.Join(r.Options.Dir, "adapters.go")))

	p("| | |\n| --- | --- |\n")
	if m.CPU != "" {
		p("| CPU | %s |\n", m.CPU)
	}
	p("| cores (`runtime.NumCPU`) | %d |\n", m.NumCPU)
	p("| `GOMAXPROCS` | %d |\n", m.GOMAXPROCS)
	p("| Go | %s %s |\n", m.GoVersion, m.OSArch)
	for _, k := range []string{reqpoolModule, "golang.org/x/sync", "github.com/alitto/pond/v2", "github.com/panjf2000/ants/v2",
		"github.com/lib/pq", "github.com/jackc/pgx/v5"} {
		if v, ok := m.Versions[k]; ok {
			p("| %s | %s |\n", k, v)
		}
	}
	p("| date | %s |\n", r.Started.UTC().Format("2006-01-02 15:04 MST"))
	p("| command | `%s` (or `make bench` in `benchmarks/`) |\n", r.Options.Command)
	p("| duration | %s |\n", r.Finished.Sub(r.Started).Round(time.Second))
	for _, run := range r.Reruns {
		p("| re-measured later: %s | `%s`, %s, %s; reqpool %s, %s |\n", scenarioList(run.Scenarios), run.Command,
			run.Started.UTC().Format("2006-01-02 15:04 MST"), run.Finished.Sub(run.Started).Round(time.Second),
			run.Revision, run.GoVersion)
	}
	p("\n")

	p("Machines are noisy. The timing scenarios run every contender %d times, interleaved (each repetition rotates ", r.Options.Reps)
	p("the order), and report medians over the repetitions; the overhead benchmarks take %d samples of each benchmark and are ", r.Options.Count)
	p("summarised by their medians and by benchstat. Ratios are to a baseline measured in the same run.\n\n")

	r.renderGoals(p)

	p("## Contenders\n\n")
	p("Every adapter runs the tasks of a request the way a competent user of the library would. Every task receives a ")
	p("context that ends when the request's does. The bounded contenders get the same `Workers`.\n\n")
	p("| contender | what the adapter does |\n| --- | --- |\n")
	for _, a := range adapterDocs {
		p("| %s | %s |\n", a.Name, a.Doc)
	}
	p("\n")
	p("Tasks are simulated queries: a task calls `ExecContext` on a real `database/sql.DB` whose driver sleeps for the ")
	p("task's duration or until the context is done, with `SetMaxOpenConns(Workers)` as the package documentation advises. ")
	p("The harness records when each task was called, when its query began on a connection, and when it returned, so ")
	p("what happens after a hang-up is measured rather than assumed. A query whose context is already done never ")
	p("reaches the database (`database/sql` checks first), so a task called after a hang-up costs a call, not a query.\n\n")

	for _, s := range r.Sections {
		p("## %d. %s\n\n", s.ID, s.Title)
		if s.Setup != "" {
			p("%s\n\n", strings.TrimSpace(s.Setup))
		}
		for _, t := range s.Tables {
			renderTable(b, t)
		}
		for _, c := range s.Charts {
			p("![%s](%s)\n\n", c.Alt, relLink(dir, c.File))
		}
		for _, g := range s.Goals {
			p("- **Goal: %s** %s: %s.", g.Goal, metWord(g.Met), g.Measured)
			if !g.Met && g.Note != "" {
				p(" %s", g.Note)
			}
			p("\n")
		}
		if len(s.Goals) > 0 {
			p("\n")
		}
		for _, n := range s.Notes {
			p("%s\n\n", strings.TrimSpace(n))
		}
		p("<sub>Scenario time: %s.</sub>\n\n", s.Elapsed.Round(time.Second))
	}
}

// renderGoals writes the summary of the goals.
func (r *Report) renderGoals(p func(string, ...any)) {
	var has bool
	for _, s := range r.Sections {
		has = has || len(s.Goals) > 0
	}
	if !has {
		return
	}
	p("## Goals\n\n| scenario | goal for reqpool | measured | |\n| --- | --- | --- | --- |\n")
	for _, s := range r.Sections {
		for _, g := range s.Goals {
			p("| %d. %s | %s | %s | %s |\n", s.ID, s.Name, g.Goal, g.Measured, metWord(g.Met))
		}
	}
	p("\n")
	for _, s := range r.Sections {
		for _, g := range s.Goals {
			if !g.Met && g.Note != "" {
				p("- **Missed: %s.** %s\n", g.Goal, g.Note)
			}
		}
	}
	p("\n")
}

// scenarioList formats scenario IDs as "scenario 8" or "scenarios 8, 9".
func scenarioList(ids []int) string {
	var parts []string
	for _, id := range ids {
		parts = append(parts, strconv.Itoa(id))
	}
	if len(parts) == 1 {
		return "scenario " + parts[0]
	}
	return "scenarios " + strings.Join(parts, ", ")
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "**missed**"
}

// renderTable writes t as a markdown table.
func renderTable(b *strings.Builder, t Table) {
	if t.Caption != "" {
		fmt.Fprintf(b, "%s\n\n", t.Caption)
	}
	fmt.Fprintf(b, "| %s |\n|", strings.Join(t.Header, " | "))
	for i := range t.Header {
		if i == 0 {
			b.WriteString(" --- |")
		} else {
			b.WriteString(" ---: |")
		}
	}
	b.WriteString("\n")
	for _, row := range t.Rows {
		fmt.Fprintf(b, "| %s |\n", strings.Join(row, " | "))
	}
	b.WriteString("\n")
}

// absPath returns path made absolute, or path itself if that fails.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}
