// Command benchmarks measures reqpool against its peers (an errgroup per
// request, a global semaphore, pond and ants) in one run, and writes the
// results as BENCHMARKS.md with SVG charts.
//
//	cd benchmarks && go run . -out ../BENCHMARKS.md   # or: make bench
//
// Each scenario lives in a file of its own (scenario_*.go) and registers
// itself with register; every scenario runs every contender through the same
// adapter (adapters.go) and returns a Section that report.go renders. The
// flags:
//
//	-out FILE        where to write the report (default ../BENCHMARKS.md)
//	-results DIR     where to write charts and raw data (default results)
//	-quick           a smoke run of every scenario with tiny sizes
//	-scenarios LIST  comma-separated scenario numbers or names (default all)
//	-reps N          repetitions of the timing scenarios (default 5)
//	-count N         samples of each overhead benchmark: runs of its test
//	                 binary, interleaved (default 6)
//	-benchtime D     -benchtime of the overhead benchmarks (default 500ms)
//	-level D         how long each open-loop load level runs (default 12s)
//	-contenders LIST comma-separated contender names (default all)
//	-cpuprofile FILE write a CPU profile of the run
//	-merge           keep the other sections of -results/report.json: run the
//	                 selected scenarios and replace (or add) only theirs
//	-render FILE     re-render a saved results/report.json to -out, running nothing
//
// The PostgreSQL scenarios need DATABASE_URL (and PgBouncer's PGBOUNCER_URL);
// the repository root's `make bench` provides both with throwaway servers.
// To re-measure some scenarios without losing the published others:
//
//	cd benchmarks && go run . -merge -scenarios tagcost,replicas -out ../BENCHMARKS.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scenario is one benchmark of the suite.
type Scenario struct {
	ID    int    // the scenario's number in the issue; sections are ordered by it
	Name  string // short name for -scenarios
	Title string // the section's heading
	// Run measures every contender of env and returns the section of the
	// report. It must bound its own time and stop early when ctx ends.
	Run func(ctx context.Context, env *Env) (*Section, error)
	// Needs names the environment variables the scenario cannot run
	// without, such as DATABASE_URL. When one is unset, Run is not called:
	// the section says that the scenario was skipped, and why.
	Needs []string
	// NoContenders marks a scenario that does not compare the pool
	// contenders (it measures reqpool's database drivers, or a deployment
	// of the example app): its tables have no row per contender.
	NoContenders bool
}

// missing returns the variables of s.Needs that are unset or empty.
func (s Scenario) missing() []string {
	var out []string
	for _, v := range s.Needs {
		if os.Getenv(v) == "" {
			out = append(out, v)
		}
	}
	return out
}

// skipped returns the section of a scenario that cannot run without the
// environment variables missing.
func skipped(missing []string) *Section {
	verb := "is"
	if len(missing) > 1 {
		verb = "are"
	}
	return &Section{Setup: fmt.Sprintf("Skipped: %s %s not set. `make bench` at the repository root runs the "+
		"benchmarks with a throwaway PostgreSQL and PgBouncer (scripts/with-postgres.sh), which set DATABASE_URL "+
		"and PGBOUNCER_URL.", strings.Join(missing, " and "), verb)}
}

// scenarios is the registry that each scenario file adds itself to.
var scenarios []Scenario

// register adds s to the suite; scenario files call it from init.
func register(s Scenario) {
	scenarios = append(scenarios, s)
	slices.SortFunc(scenarios, func(a, b Scenario) int { return a.ID - b.ID })
}

// Options are the program's settings, from its flags.
type Options struct {
	Out       string        // the report's path
	Results   string        // the directory for charts and raw data
	Quick     bool          // tiny sizes: a check that everything runs, not a measurement
	Scenarios string        // comma-separated IDs or names; empty for all
	Reps      int           // repetitions of the timing scenarios
	Count     int           // samples of each overhead benchmark (runs of the test binary)
	BenchTime string        // -benchtime of the overhead benchmarks
	Level     time.Duration // duration of each open-loop load level
	Dir       string        // the benchmarks module's directory, where go test runs
	Command   string        // the command line reported in BENCHMARKS.md
	Verbose   bool          // log progress to stderr
	// Contenders selects contenders by name, comma-separated; empty for all.
	Contenders string
	// CPUProfile, when set, is where a CPU profile of the whole run goes.
	CPUProfile string
	// Merge keeps the sections of the report already in Results
	// (report.json) that this run does not measure.
	Merge bool
}

// Env is what a scenario runs with.
type Env struct {
	Options
	Contenders []Factory // in table order
	// Logf logs progress; it never fails.
	Logf func(format string, args ...any)
}

// reps returns how many times the timing scenarios repeat.
func (e *Env) reps() int { return e.Reps }

// order returns the contenders in the order repetition rep runs them: a
// rotation, so that drift over a run does not favour whoever runs first.
func (e *Env) order(rep int) []Factory {
	n := len(e.Contenders)
	out := make([]Factory, n)
	for i := range n {
		out[i] = e.Contenders[(i+rep)%n]
	}
	return out
}

func main() {
	var o Options
	flag.StringVar(&o.Out, "out", "../BENCHMARKS.md", "write the report to `file`")
	flag.StringVar(&o.Results, "results", "results", "write charts and raw data to `dir`")
	flag.BoolVar(&o.Quick, "quick", false, "smoke run: every scenario with tiny sizes")
	flag.StringVar(&o.Scenarios, "scenarios", "", "comma-separated scenario `numbers or names` (default all)")
	flag.IntVar(&o.Reps, "reps", 5, "repetitions of the timing scenarios")
	flag.IntVar(&o.Count, "count", 6, "samples of each overhead benchmark (interleaved runs of its test binary)")
	flag.StringVar(&o.BenchTime, "benchtime", "500ms", "-benchtime of the overhead benchmarks")
	flag.DurationVar(&o.Level, "level", 12*time.Second, "duration of each open-loop load level")
	flag.BoolVar(&o.Verbose, "v", true, "log progress to stderr")
	flag.StringVar(&o.Contenders, "contenders", "", "comma-separated contender `names` (default all)")
	flag.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to `file`")
	flag.BoolVar(&o.Merge, "merge", false, "keep the other sections of -results/report.json; replace or add only those that run")
	render := flag.String("render", "", "re-render the report saved in `report.json` to -out, running nothing")
	flag.Parse()
	if *render != "" {
		r, err := readReport(*render)
		if err == nil {
			err = r.writeMarkdown(o.Out)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchmarks:", err)
			os.Exit(1)
		}
		return
	}
	o.Dir = "."
	o.Command = commandLine()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "benchmarks:", err)
		os.Exit(1)
	}
}

// commandLine reconstructs how the program was started, for the report: `go
// run` leaves a temporary binary in os.Args[0], which means nothing to a
// reader.
func commandLine() string {
	args := []string{"go", "run", "."}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return "cd benchmarks && " + strings.Join(args, " ")
}

// run runs the selected scenarios and writes the report.
func run(ctx context.Context, o Options) error {
	selected, err := selectScenarios(o.Scenarios)
	if err != nil {
		return err
	}
	if o.Quick {
		// Enough to run every code path, not to measure anything.
		o.Reps, o.Count, o.BenchTime = min(o.Reps, 2), 1, "20x"
		o.Level = min(o.Level, 300*time.Millisecond)
	}
	o.Reps = max(o.Reps, 1)
	if err := os.MkdirAll(o.Results, 0o755); err != nil {
		return err
	}
	rep := newReport(o)
	jsonPath := filepath.Join(o.Results, "report.json")
	var base *Report // the report that this run's sections go into, with -merge
	if o.Merge {
		if base, err = readReport(jsonPath); err != nil {
			return fmt.Errorf("-merge: %w", err)
		}
		if err := base.canMerge(rep); err != nil {
			return fmt.Errorf("-merge %s: %w", jsonPath, err)
		}
	}
	cs, err := selectContenders(o.Contenders)
	if err != nil {
		return err
	}
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	env := &Env{Options: o, Contenders: cs, Logf: func(string, ...any) {}}
	if o.Verbose {
		env.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
		}
	}
	for _, s := range selected {
		if err := ctx.Err(); err != nil {
			return err
		}
		env.Logf("scenario %d (%s): start", s.ID, s.Name)
		start := time.Now()
		var sec *Section
		if missing := s.missing(); len(missing) > 0 {
			sec = skipped(missing)
			env.Logf("scenario %d (%s): skipped, %s unset", s.ID, s.Name, strings.Join(missing, ", "))
		} else if sec, err = s.Run(ctx, env); err != nil {
			return fmt.Errorf("scenario %d (%s): %w", s.ID, s.Name, err)
		}
		sec.ID, sec.Name = s.ID, s.Name
		if sec.Title == "" {
			sec.Title = s.Title
		}
		sec.Elapsed = time.Since(start)
		rep.Sections = append(rep.Sections, sec)
		env.Logf("scenario %d (%s): done in %s", s.ID, s.Name, sec.Elapsed.Round(time.Second))
	}
	rep.Finished = time.Now()
	if base != nil {
		base.merge(rep)
		rep = base
	}
	if err := rep.writeJSON(jsonPath); err != nil {
		return err
	}
	return rep.writeMarkdown(o.Out)
}

// selectScenarios returns the scenarios named by list (IDs or names,
// comma-separated), or all of them for an empty list.
func selectScenarios(list string) ([]Scenario, error) {
	if strings.TrimSpace(list) == "" {
		return scenarios, nil
	}
	var out []Scenario
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		i := slices.IndexFunc(scenarios, func(s Scenario) bool { return s.Name == f || strconv.Itoa(s.ID) == f })
		if i < 0 {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", f, scenarioNames())
		}
		if !slices.ContainsFunc(out, func(s Scenario) bool { return s.ID == scenarios[i].ID }) {
			out = append(out, scenarios[i])
		}
	}
	slices.SortFunc(out, func(a, b Scenario) int { return a.ID - b.ID })
	return out, nil
}

// selectContenders returns the contenders named in list (all for an empty
// list), in table order.
func selectContenders(list string) ([]Factory, error) {
	var out []Factory
	want := map[string]bool{}
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f != "" {
			want[f] = true
		}
	}
	found := map[string]bool{}
	for _, f := range contenders {
		if len(want) > 0 && !want[f.Name] {
			continue
		}
		found[f.Name] = true
		out = append(out, f)
	}
	for name := range want {
		if found[name] {
			continue
		}
		return nil, fmt.Errorf("unknown contender %q (have %s)", name, strings.Join(contenderNames(contenders), ", "))
	}
	if len(out) == 0 {
		return nil, errors.New("no contender selected")
	}
	return out, nil
}

func scenarioNames() string {
	var names []string
	for _, s := range scenarios {
		names = append(names, fmt.Sprintf("%d=%s", s.ID, s.Name))
	}
	return strings.Join(names, ", ")
}

// errTimeout is returned by a scenario whose bounded wait ran out: a sign
// of a broken contender or harness, not a result.
var errTimeout = errors.New("timed out")
