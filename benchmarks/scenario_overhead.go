package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Scenario 1, overhead: the benchmarks of overhead_test.go, run by the
// test binary in a subprocess, so that they get the testing package's own
// timing, then summarised by medians and by benchstat. Three parts:
//
//   - BenchmarkOverhead: a Fanout of no-op tasks on a reused request, every
//     contender;
//   - BenchmarkRequest: the per-request cost, of a request that never fans
//     out (reqpool's Middleware against chi's RequestID) and of a new
//     request with a Fanout of 8 (every contender);
//   - BenchmarkObserve: what an Observer attached to the pool costs a
//     Fanout of 8 (nothing, a do-nothing Observer, reqprom, reqotel), and
//     BenchmarkClock, the clock read that reqpool makes for any Observer.
func init() {
	register(Scenario{ID: 1, Name: "overhead", Title: "Overhead", Run: runOverhead})
}

// Overhead benchmark parameters, shared with overhead_test.go.
const (
	overheadWorkers = 16 // the pool size: reqpool's DefaultWorkers
	requestFanout   = 8  // the tasks of BenchmarkRequest's requests that fan out
	observeTasks    = 8  // the tasks of BenchmarkObserve's Fanout
)

var (
	overheadSizes = []int{1, 8, 64}                // BenchmarkOverhead's fan-outs
	overheadModes = []string{"serial", "parallel"} // one goroutine, or GOMAXPROCS
)

// requestAnchors are the handlers of BenchmarkRequest/fanout=0, with their
// labels: the bare handler, reqpool's Middleware, and chi's RequestID (the
// issue's anchor).
var requestAnchors = []string{"bare", "reqpool", "chi"}

var requestAnchorLabels = map[string]string{
	"bare":    "bare handler",
	"reqpool": "`reqpool.Middleware(pool)`",
	"chi":     "chi `middleware.RequestID`",
}

// observeCases are what BenchmarkObserve attaches to the pool (its
// attachers), in table order; the first is the baseline, the second the
// do-nothing Observer.
var observeCases = []struct{ Name, Label string }{
	{"none", "nothing"},
	{"nop", "a do-nothing `reqpool.Observer` (`pool.Observe`)"},
	{"reqprom", "`reqprom.NewCollector(pool)`"},
	{"reqotel-global", "`reqotel.Observe(pool)`, global no-op providers"},
	{"reqotel-sdk", "`reqotel.Observe(pool)`, SDK sampling every span, batched to a discarding exporter"},
}

// overheadBenchRE selects the benchmarks that the scenario runs.
const overheadBenchRE = "^Benchmark(Overhead|Request|Observe|Clock)$"

// overheadRaw is the raw data: every sample of every metric.
type overheadRaw struct {
	Count     int
	BenchTime string
	Samples   overheadSamples // benchmark name without "Benchmark" and -GOMAXPROCS -> unit -> values
}

// overheadSamples are the samples of one run, as overheadRaw keeps them.
type overheadSamples map[string]map[string][]float64

// med returns the median of name's samples of unit, NaN if there are none.
func (s overheadSamples) med(name, unit string) float64 {
	return median(s[name][unit])
}

// The names of the sub-benchmarks, as overhead_test.go runs them and as
// overheadSamples keys them (with the top-level name before them).
func overheadSub(impl string, n int, mode string) string {
	return fmt.Sprintf("impl=%s/tasks=%d/mode=%s", impl, n, mode)
}

func requestSub(fanout int, impl, mode string) string {
	return fmt.Sprintf("fanout=%d/impl=%s/mode=%s", fanout, impl, mode)
}

func observeSub(attached string) string { return "attached=" + attached }

func runOverhead(ctx context.Context, env *Env) (*Section, error) {
	out := filepath.Join(env.Results, "overhead.txt")
	stdout, err := runBenchInterleaved(ctx, env, overheadBenchRE)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(out, stdout, 0o644); err != nil {
		return nil, err
	}
	samples, err := parseBench(bytes.NewReader(stdout))
	if err != nil {
		return nil, err
	}
	sec := &Section{
		Setup: fmt.Sprintf("`benchmarks/overhead_test.go`, on a pool of %d workers. The test binary (`go test -c`) runs "+
			"%d times, `-test.run '^$' -test.bench '%s' -test.benchmem -test.count 1 -test.benchtime %s`, so that the "+
			"samples of every sub-benchmark are interleaved in time with the others'; raw output in [`overhead.txt`](%s). "+
			"Serial calls from one goroutine, parallel from GOMAXPROCS goroutines at once (each its own request). "+
			"errgroup has no process-wide bound, so it is the floor a bounded pool is measured against; the semaphore "+
			"is the bounded hand-written baseline.",
			overheadWorkers, env.Count, overheadBenchRE, env.BenchTime, fileLink(out)),
		Raw: overheadRaw{Count: env.Count, BenchTime: env.BenchTime, Samples: samples},
	}
	names := contenderNames(env.Contenders)
	for _, part := range []func(*Section, overheadSamples, []string){fanoutPart, requestPart, observePart} {
		part(sec, samples, names)
	}

	var bs []string
	for _, q := range []struct{ title, filter, col string }{
		{"Overhead", ".name:Overhead", "/impl@(" + baselineFirst(names, "semaphore") + ")"},
		{"Request, fanout=0", ".name:Request /fanout:0", "/impl@(" + baselineFirst(requestAnchors, "chi") + ")"},
		{fmt.Sprintf("Request, fanout=%d", requestFanout), fmt.Sprintf(".name:Request /fanout:%d", requestFanout),
			"/impl@(" + baselineFirst(names, "semaphore") + ")"},
		{"Observe", ".name:Observe", "/attached@(" + strings.Join(observeNames(), " ") + ")"},
	} {
		text, err := benchstat(ctx, env.Dir, out, "-filter", q.filter, "-col", q.col)
		if err != nil {
			return nil, err
		}
		bs = append(bs, fmt.Sprintf("<details><summary>benchstat: %s (columns compared to the first)</summary>\n\n```\n%s\n```\n\n</details>",
			q.title, strings.TrimSpace(text)))
	}
	sec.Notes = append(sec.Notes, bs...)
	return sec, nil
}

// fanoutPart adds BenchmarkOverhead's tables and goals to sec.
func fanoutPart(sec *Section, s overheadSamples, names []string) {
	med := func(impl string, n int, mode, unit string) float64 {
		return s.med("Overhead/"+overheadSub(impl, n, mode), unit)
	}
	ns := Table{Caption: "**A Fanout of n no-op tasks** on a request that lasts the whole loop (`BenchmarkOverhead`): " +
		"median ns/op, with reqpool's ratio to the two baselines:",
		Header: append(append([]string{"tasks, mode"}, names...), "reqpool / semaphore", "reqpool / errgroup")}
	mem := Table{Caption: "Median B/op and allocs/op:", Header: []string{"tasks, mode"}}
	for _, c := range names {
		mem.Header = append(mem.Header, c+" B", c+" allocs")
	}
	var (
		worstSem, worstEg         float64
		worstSemCell, worstEgCell string
	)
	for _, n := range overheadSizes {
		for _, mode := range overheadModes {
			cell := fmt.Sprintf("%d, %s", n, mode)
			row := []string{cell}
			mrow := []string{cell}
			for _, c := range names {
				row = append(row, fmtFloat(med(c, n, mode, "ns/op")))
				mrow = append(mrow, fmtFloat(med(c, n, mode, "B/op")), fmtFloat(med(c, n, mode, "allocs/op")))
			}
			rp := med("reqpool", n, mode, "ns/op")
			rs, re := rp/med("semaphore", n, mode, "ns/op"), rp/med("errgroup", n, mode, "ns/op")
			if rs > worstSem {
				worstSem, worstSemCell = rs, cell
			}
			if re > worstEg {
				worstEg, worstEgCell = re, cell
			}
			ns.Rows = append(ns.Rows, append(row, fmtRatio(rs), fmtRatio(re)))
			mem.Rows = append(mem.Rows, mrow)
		}
	}
	sec.Tables = append(sec.Tables, ns, mem)
	if worstSem > 0 {
		sec.Goals = append(sec.Goals,
			Goal{Goal: "overhead at or below the semaphore baseline",
				Measured: fmt.Sprintf("worst cell %s: %s of semaphore", worstSemCell, fmtRatio(worstSem)), Met: worstSem <= 1},
			Goal{Goal: "overhead within 1.5× of raw errgroup",
				Measured: fmt.Sprintf("worst cell %s: %s of errgroup", worstEgCell, fmtRatio(worstEg)), Met: worstEg <= 1.5})
	}
}

// The goals for the per-request cost.
const (
	maxMiddlewareVsRequestID = 1.0 // Middleware on a request that never fans out, to chi's RequestID
	maxMiddlewareAllocs      = 4
	maxFanoutVsSemSerial     = 0.6 // a new handle and a Fanout of 8, to the semaphore
	maxFanoutVsSemParallel   = 0.7
	maxAllocsPerQuery        = 3
)

// requestPart adds BenchmarkRequest's tables and goals to sec.
func requestPart(sec *Section, s overheadSamples, names []string) {
	med := func(fanout int, impl, mode, unit string) float64 {
		return s.med("Request/"+requestSub(fanout, impl, mode), unit)
	}

	// A request that never fans out.
	anchor := Table{Caption: "**Per request that never fans out** (`BenchmarkRequest/fanout=0`): one request served " +
		"by a handler that does nothing, with no server or network (a reused `*http.Request` without `X-Request-ID`, so " +
		"that both middlewares make an id, and a ResponseWriter that discards), alone and behind each middleware. " +
		"Median ns/op, B/op and allocs/op (serial; parallel allocates the same), and the ratio to chi's RequestID. " +
		"reqpool's Middleware makes a UUIDv7 request id, the handle (with its context), the request's shallow copy, and " +
		"sets the `X-Request-ID` response header; chi's RequestID makes an id from a process-wide counter, a context " +
		"value and the request's shallow copy.",
		Header: []string{"handler", "serial ns", "parallel ns", "B/op", "allocs/op", "serial / RequestID", "parallel / RequestID"}}
	for _, impl := range requestAnchors {
		ser, par := med(0, impl, "serial", "ns/op"), med(0, impl, "parallel", "ns/op")
		anchor.Rows = append(anchor.Rows, []string{requestAnchorLabels[impl], fmtFloat(ser), fmtFloat(par),
			fmtFloat(med(0, impl, "serial", "B/op")), fmtFloat(med(0, impl, "serial", "allocs/op")),
			fmtRatio(ser / med(0, "chi", "serial", "ns/op")), fmtRatio(par / med(0, "chi", "parallel", "ns/op"))})
	}
	// What each middleware adds to the bare handler, and its worst ratio.
	var (
		added     []string
		worstAdd  float64
		mwAllocs  = math.Max(med(0, "reqpool", "serial", "allocs/op"), med(0, "reqpool", "parallel", "allocs/op"))
		chiAllocs = med(0, "chi", "serial", "allocs/op")
	)
	for _, mode := range overheadModes {
		bare := med(0, "bare", mode, "ns/op")
		mw, chi := med(0, "reqpool", mode, "ns/op")-bare, med(0, "chi", mode, "ns/op")-bare
		worstAdd = math.Max(worstAdd, mw/chi)
		added = append(added, fmt.Sprintf("%s %s vs %s ns (%s)", mode, fmtFloat(mw), fmtFloat(chi), fmtRatio(mw/chi)))
	}
	sec.Tables = append(sec.Tables, anchor)
	sec.Goals = append(sec.Goals, Goal{
		Goal: fmt.Sprintf("a request that never fans out: Middleware adds ≤ %.1f× what chi's RequestID adds, in ≤ %d allocations",
			maxMiddlewareVsRequestID, maxMiddlewareAllocs),
		Measured: fmt.Sprintf("added to the bare handler: %s; %s allocs (RequestID: %s)",
			strings.Join(added, ", "), fmtFloat(mwAllocs), fmtFloat(chiAllocs)),
		Met: worstAdd <= maxMiddlewareVsRequestID && mwAllocs <= maxMiddlewareAllocs,
		Note: fmt.Sprintf("Middleware makes fewer allocations than RequestID (%s of %s B in all, against %s of %s B), "+
			"and more work: a UUIDv7 request id (a clock read and two random numbers) where RequestID increments a "+
			"counter, and the X-Request-ID response header, which RequestID does not set.",
			fmtFloat(mwAllocs), fmtFloat(med(0, "reqpool", "serial", "B/op")), fmtFloat(chiAllocs), fmtFloat(med(0, "chi", "serial", "B/op"))),
	})

	// A new request with a Fanout of 8.
	fan := Table{Caption: fmt.Sprintf("**A new request with a Fanout of %d no-op tasks** (`BenchmarkRequest/fanout=%d`): the "+
		"same request, now served by a handler that calls the contender's Fanout of %d tasks with `r.Context()`, behind "+
		"the contender's wrapping: for reqpool, `reqpool.Middleware(pool)`, which makes a new handle per request (with "+
		"its request id and the request's shallow copy), registered with the scheduler at its first Fanout and released "+
		"when the handler returns; the others have no per-request state of their own. Median ns/op and allocs/op, and "+
		"the ratio to the semaphore:", requestFanout, requestFanout, requestFanout),
		Header: []string{"contender", "serial ns", "parallel ns", "serial allocs", "parallel allocs", "allocs per task",
			"serial / semaphore", "parallel / semaphore"}}
	ratio := map[string]float64{}
	var worstAllocs float64
	for _, c := range names {
		row := []string{c}
		for _, mode := range overheadModes {
			row = append(row, fmtFloat(med(requestFanout, c, mode, "ns/op")))
		}
		allocs := math.Max(med(requestFanout, c, "serial", "allocs/op"), med(requestFanout, c, "parallel", "allocs/op"))
		row = append(row, fmtFloat(med(requestFanout, c, "serial", "allocs/op")), fmtFloat(med(requestFanout, c, "parallel", "allocs/op")),
			fmt.Sprintf("%.1f", allocs/requestFanout))
		for _, mode := range overheadModes {
			r := med(requestFanout, c, mode, "ns/op") / med(requestFanout, "semaphore", mode, "ns/op")
			row = append(row, fmtRatio(r))
			if c == "reqpool" {
				ratio[mode] = r
			}
		}
		if c == "reqpool" {
			worstAllocs = allocs
		}
		fan.Rows = append(fan.Rows, row)
	}
	sec.Tables = append(sec.Tables, fan)
	for _, g := range []struct {
		mode, how string
		max       float64
	}{
		{"serial", "serially", maxFanoutVsSemSerial},
		{"parallel", "from GOMAXPROCS goroutines", maxFanoutVsSemParallel},
	} {
		// Where reqpool's time per request goes: the Middleware alone, the
		// Fanout on a request that has fanned out before (the first
		// table), and the rest, the handle's registration with the
		// scheduler at its first Fanout and its release.
		total := med(requestFanout, "reqpool", g.mode, "ns/op")
		mw := med(0, "reqpool", g.mode, "ns/op") - med(0, "bare", g.mode, "ns/op")
		reused := s.med("Overhead/"+overheadSub("reqpool", requestFanout, g.mode), "ns/op")
		sec.Goals = append(sec.Goals, Goal{
			Goal: fmt.Sprintf("a new handle and a Fanout of %d per request, %s: ≤ %.1f× the semaphore", requestFanout, g.how, g.max),
			Measured: fmt.Sprintf("%s vs %s ns: %s", fmtFloat(total),
				fmtFloat(med(requestFanout, "semaphore", g.mode, "ns/op")), fmtRatio(ratio[g.mode])),
			Met: ratio[g.mode] <= g.max,
			Note: fmt.Sprintf("Of reqpool's %s ns %s, the Middleware alone takes %s (a request that never fans out), "+
				"a Fanout of %d on a request that has fanned out before %s (the first table), and the handle's "+
				"registration with the scheduler at its first Fanout and its release the other %s.",
				fmtFloat(total), g.how, fmtFloat(mw), requestFanout, fmtFloat(reused), fmtFloat(total-mw-reused)),
		})
	}
	sec.Goals = append(sec.Goals, Goal{
		Goal: fmt.Sprintf("a new handle and a Fanout of %d per request: ≤ %d allocations per query", requestFanout, maxAllocsPerQuery),
		Measured: fmt.Sprintf("%s allocs per request, %.1f per query (semaphore: %s)", fmtFloat(worstAllocs),
			worstAllocs/requestFanout, fmtFloat(med(requestFanout, "semaphore", "serial", "allocs/op"))),
		Met: worstAllocs/requestFanout <= maxAllocsPerQuery,
	})
}

// maxReqpromVsNone is the goal for the Prometheus collector: its
// Fanout's cost to that with nothing attached.
const maxReqpromVsNone = 1.2

// observePart adds BenchmarkObserve's table and goal to sec.
func observePart(sec *Section, s overheadSamples, _ []string) {
	med := func(attached, unit string) float64 { return s.med("Observe/"+observeSub(attached), unit) }
	none, nop, prom := med("none", "ns/op"), med("nop", "ns/op"), med("reqprom", "ns/op")
	clock := s.med("Clock", "ns/op")
	reads := observeTasks + 1 // one per query, one per Fanout
	t := Table{Caption: fmt.Sprintf("**Observers** (`BenchmarkObserve`): a serial Fanout of %d no-op tasks on a request "+
		"that lasts the whole loop, as the cell \"%d, serial\" of the first table (%s ns/op there, nothing attached), "+
		"on a pool with each of these attached. Median ns/op, B/op and allocs/op, and the ratios to nothing attached "+
		"and to the do-nothing Observer. Any Observer costs reqpool's core a monotonic clock read per query and one "+
		"per Fanout, %d for this Fanout (`BenchmarkClock`: %s ns a read here, so about %s ns), and the calls to it: the "+
		"do-nothing Observer's figure.", observeTasks, observeTasks, fmtFloat(s.med("Overhead/"+overheadSub("reqpool", observeTasks, "serial"), "ns/op")),
		reads, fmtNs(clock), fmtFloat(float64(reads)*clock)),
		Header: []string{"attached", "ns/op", "B/op", "allocs/op", "/ nothing", "/ do-nothing Observer"}}
	for _, oc := range observeCases {
		ns := med(oc.Name, "ns/op")
		t.Rows = append(t.Rows, []string{oc.Label, fmtFloat(ns), fmtFloat(med(oc.Name, "B/op")), fmtFloat(med(oc.Name, "allocs/op")),
			fmtRatio(ns / none), fmtRatio(ns / nop)})
	}
	sec.Tables = append(sec.Tables, t)
	sec.Goals = append(sec.Goals, Goal{
		Goal: fmt.Sprintf("the Prometheus collector (reqprom) attached: ≤ %.1f× nothing attached", maxReqpromVsNone),
		Measured: fmt.Sprintf("%s vs %s ns: %s (a do-nothing Observer: %s ns, %s; reqprom %s of it)",
			fmtFloat(prom), fmtFloat(none), fmtRatio(prom/none), fmtFloat(nop), fmtRatio(nop/none), fmtRatio(prom/nop)),
		Met: prom/none <= maxReqpromVsNone,
		Note: fmt.Sprintf("Attaching any Observer costs reqpool's core a monotonic clock read per query and one per Fanout, "+
			"%d for a Fanout of %d (%s ns a read on this machine), and the calls: a do-nothing Observer alone is %s nothing "+
			"attached. reqprom, whose Observer makes three atomic additions per query, costs %s the do-nothing Observer.",
			reads, observeTasks, fmtNs(clock), fmtRatio(nop/none), fmtRatio(prom/nop)),
	})
}

// fmtNs formats a duration in nanoseconds that may be below 100, with one
// decimal there.
func fmtNs(v float64) string {
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return fmtFloat(v)
}

// observeNames returns the names of observeCases.
func observeNames() []string {
	var out []string
	for _, oc := range observeCases {
		out = append(out, oc.Name)
	}
	return out
}

// baselineFirst returns names space-separated with base first, since
// benchstat compares every column to the first.
func baselineFirst(names []string, base string) string {
	out := []string{base}
	for _, n := range names {
		if n != base {
			out = append(out, n)
		}
	}
	return strings.Join(out, " ")
}

// runBenchInterleaved builds the benchmarks' test binary and runs the
// benchmarks matching re env.Count times, each run with -count 1, and
// returns their output, concatenated: every sub-benchmark's samples are
// then spread over the whole run, as are the others', so that a slow spell
// of the machine does not fall on one alone.
func runBenchInterleaved(ctx context.Context, env *Env, re string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "reqpool-overhead-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "benchmarks.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, ".")
	build.Dir = env.Dir
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go test -c: %w\n%s", err, out)
	}
	args := []string{"-test.run", "^$", "-test.bench", re, "-test.benchmem", "-test.count", "1",
		"-test.benchtime", env.BenchTime, "-test.timeout", "60m"}
	var stdout bytes.Buffer
	for i := range env.Count {
		env.Logf("  run %d of %d: benchmarks.test %s", i+1, env.Count, strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = env.Dir
		var run bytes.Buffer
		cmd.Stdout = &run
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("benchmarks.test: %w\n%s", err, run.String())
		}
		stdout.Write(run.Bytes())
	}
	return stdout.Bytes(), nil
}

// benchLine is one result line of `go test -bench`: the name without
// "Benchmark" and without the -GOMAXPROCS suffix, then the measurements.
var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parseBench reads `go test -bench` output into samples per benchmark and
// unit.
func parseBench(r io.Reader) (overheadSamples, error) {
	out := overheadSamples{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if out[m[1]] == nil {
			out[m[1]] = map[string][]float64{}
		}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("bad benchmark line %q: %w", sc.Text(), err)
			}
			out[m[1]][f[i+1]] = append(out[m[1]][f[i+1]], v)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no benchmark results")
	}
	return out, sc.Err()
}

// benchstat runs the benchstat tool pinned in go.mod on file with the
// given flags and returns its text output.
func benchstat(ctx context.Context, dir, file string, flags ...string) (string, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "benchstat"}, flags...), abs)...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("benchstat: %w\n%s", err, errb.String())
	}
	return out.String(), nil
}
