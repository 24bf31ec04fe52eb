package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Scenario 1, overhead: BenchmarkOverhead (overhead_test.go) run by `go
// test` in a subprocess, so that it gets the testing package's own timing
// and -count, then summarised by medians and by benchstat.
func init() {
	register(Scenario{ID: 1, Name: "overhead", Title: "Overhead", Run: runOverhead})
}

// Overhead benchmark parameters, shared with BenchmarkOverhead: the pool
// size and the fan-outs measured.
const overheadWorkers = 16 // reqpool's DefaultWorkers

var overheadSizes = []int{1, 8, 64}

// benchKey identifies one sub-benchmark.
type benchKey struct {
	Impl  string
	Tasks int
	Mode  string
}

// overheadRaw is the raw data: every sample of every metric.
type overheadRaw struct {
	Count     int
	BenchTime string
	Samples   map[string]map[string][]float64 // "impl/tasks/mode" -> unit -> values
}

var benchLine = regexp.MustCompile(`^BenchmarkOverhead/impl=([^/]+)/tasks=(\d+)/mode=(\w+?)(?:-\d+)?\s+\d+\s+(.*)$`)

func runOverhead(ctx context.Context, env *Env) (*Section, error) {
	count, benchtime := env.Count, env.BenchTime
	out := filepath.Join(env.Results, "overhead.txt")
	args := []string{"test", "-run", "^$", "-bench", "^BenchmarkOverhead$", "-benchmem",
		"-count", strconv.Itoa(count), "-benchtime", benchtime, "-timeout", "60m", "."}
	env.Logf("  go %s", strings.Join(args, " "))
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = env.Dir
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test: %w\n%s", err, stdout.String())
	}
	if err := os.WriteFile(out, stdout.Bytes(), 0o644); err != nil {
		return nil, err
	}

	samples, err := parseBench(&stdout)
	if err != nil {
		return nil, err
	}
	raw := overheadRaw{Count: count, BenchTime: benchtime, Samples: map[string]map[string][]float64{}}
	for k, v := range samples {
		raw.Samples[fmt.Sprintf("%s/%d/%s", k.Impl, k.Tasks, k.Mode)] = v
	}
	med := func(impl string, n int, mode, unit string) float64 {
		return median(samples[benchKey{impl, n, mode}][unit])
	}

	names := contenderNames(env.Contenders)
	ns := Table{Caption: "Median ns/op (a Fanout of n no-op tasks), with reqpool's ratio to the two baselines:",
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
		for _, mode := range []string{"serial", "parallel"} {
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

	order := strings.Join(names, " ")
	if i := strings.Index(order, "semaphore"); i > 0 { // benchstat compares every column to the first
		order = "semaphore " + strings.Replace(order, "semaphore", "", 1)
		order = strings.Join(strings.Fields(order), " ")
	}
	bs, err := benchstat(ctx, env.Dir, out, "/impl@("+order+")")
	if err != nil {
		return nil, err
	}
	sec := &Section{
		Setup: fmt.Sprintf("`BenchmarkOverhead/impl=X/tasks=N/mode=serial|parallel` in `benchmarks/overhead_test.go`: a "+
			"Fanout of 1, 8 or 64 no-op tasks on a pool of %d workers. Serial calls it from one goroutine, parallel "+
			"from GOMAXPROCS goroutines at once (each its own request). `go test -run '^$' -bench ^BenchmarkOverhead$ "+
			"-benchmem -count %d -benchtime %s`, raw output in [`overhead.txt`](%s). "+
			"errgroup has no process-wide bound, so it is the floor a bounded pool is measured against; the semaphore "+
			"is the bounded hand-written baseline.", overheadWorkers, count, benchtime, fileLink(out)),
		Tables: []Table{ns, mem},
		Notes: []string{"<details><summary>benchstat (columns compared to semaphore)</summary>\n\n```\n" +
			strings.TrimSpace(bs) + "\n```\n\n</details>"},
		Raw: raw,
	}
	if worstSem > 0 {
		sec.Goals = append(sec.Goals,
			Goal{Goal: "overhead at or below the semaphore baseline",
				Measured: fmt.Sprintf("worst cell %s: %s of semaphore", worstSemCell, fmtRatio(worstSem)), Met: worstSem <= 1},
			Goal{Goal: "overhead within 1.5× of raw errgroup",
				Measured: fmt.Sprintf("worst cell %s: %s of errgroup", worstEgCell, fmtRatio(worstEg)), Met: worstEg <= 1.5})
	}
	return sec, nil
}

// parseBench reads `go test -bench` output into samples per sub-benchmark
// and unit.
func parseBench(r io.Reader) (map[benchKey]map[string][]float64, error) {
	out := map[benchKey]map[string][]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		k := benchKey{Impl: m[1], Tasks: n, Mode: m[3]}
		if out[k] == nil {
			out[k] = map[string][]float64{}
		}
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("bad benchmark line %q: %w", sc.Text(), err)
			}
			out[k][f[i+1]] = append(out[k][f[i+1]], v)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no BenchmarkOverhead results")
	}
	return out, sc.Err()
}

// benchstat runs the benchstat tool pinned in go.mod on file with the given
// column projection and returns its text output.
func benchstat(ctx context.Context, dir, file, col string) (string, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "tool", "benchstat", "-col", col, abs)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("benchstat: %w\n%s", err, errb.String())
	}
	return out.String(), nil
}
