package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMakeDemoWithoutTerminal runs `make demo` as CI, an IDE or a process
// manager does: in a session of its own, with no terminal, on a throwaway
// PostgreSQL of its own (no DATABASE_URL). It first runs the command lines
// of the banner as a user pastes them. Then, with a report in flight, it sends
// one SIGINT, to the app's process group or to make's, and checks that the
// app stops gracefully: the report is answered, the app logs "stopped", and
// make exits 0, or, for the signal that reached make too, is itself killed by
// it, as GNU make always is.
func TestMakeDemoWithoutTerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL of its own and seeds it: about 15 s")
	}
	makeBin, err := exec.LookPath("make")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("make not found, and CI=true")
		}
		t.Skip("make not found")
	}
	for _, tc := range []struct {
		name   string
		toMake bool // signal make's process group rather than the app's
	}{
		{"SIGINT to the app's group", false},
		{"SIGINT to make's group", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDemo(t, makeBin)
			if !tc.toMake {
				d.pasteBanner(t)
			}
			answered := make(chan error, 1)
			go func() { answered <- getOK(d.url+"/orgs/1/report?sleep=1", "in-flight") }()
			d.waitRunning(t, "in-flight")

			target := d.appGroup(t)
			if tc.toMake {
				target = d.cmd.Process.Pid
			}
			if err := syscall.Kill(-target, syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			if err := <-answered; err != nil {
				t.Errorf("the report in flight: %v", err)
			}
			err := d.wait(t)
			out := d.output()
			if !strings.Contains(out, "msg=stopped") {
				t.Errorf("the app did not log msg=stopped; output:\n%s", out)
			}
			ws := d.cmd.ProcessState.Sys().(syscall.WaitStatus)
			if tc.toMake {
				if !ws.Signaled() || ws.Signal() != syscall.SIGINT {
					t.Errorf("make: %v, want it killed by SIGINT", err)
				}
			} else if err != nil {
				t.Errorf("make demo: %v, want exit status 0; output:\n%s", err, out)
			}
		})
	}
}

// demo is a running `make demo`.
type demo struct {
	cmd      *exec.Cmd
	url      string // the app's base URL
	debugURL string // its debug listener's

	exited  chan struct{} // closed once make has exited and its output is read
	waitErr error         // cmd.Wait's, once exited is closed

	mu  sync.Mutex // protects out
	out strings.Builder
}

var (
	listeningLine = regexp.MustCompile(`^dashboard listening on (http://\S+)`)
	debugLine     = regexp.MustCompile(`^\s+(http://\S+)/debug/reqpool\s`)
)

// startDemo starts `make demo` and waits for its banner. When the test
// ends, whatever is left of make's session is killed.
func startDemo(t *testing.T, makeBin string) *demo {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(makeBin, "-C", root, "demo", "DEMO_ADDR=127.0.0.1:0")
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "DATABASE_URL", "PGBOUNCER_URL", "REQPOOL_PGCTL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL":
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &demo{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.out.WriteString(line + "\n")
			if m := listeningLine.FindStringSubmatch(line); m != nil {
				d.url = m[1]
			}
			if m := debugLine.FindStringSubmatch(line); m != nil && d.debugURL == "" {
				d.debugURL = m[1]
				close(ready)
			}
			d.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		d.waitErr = cmd.Wait()
		pw.Close()
		<-read
		close(d.exited)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // make's session is its group
		<-d.exited
	})
	select {
	case <-ready:
	case <-d.exited:
		t.Fatalf("make demo exited before its banner:\n%s", d.output())
	case <-time.After(4 * time.Minute): // the first build on a machine included
		t.Fatalf("no banner after 4 minutes:\n%s", d.output())
	}
	return d
}

// wait waits for make to exit and returns cmd.Wait's error.
func (d *demo) wait(t *testing.T) error {
	select {
	case <-d.exited:
		return d.waitErr
	case <-time.After(time.Minute):
		t.Fatalf("make demo still running a minute after the signal:\n%s", d.output())
		return nil
	}
}

func (d *demo) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

// waitRunning waits until the request with the id given runs a query, as
// the app's debug page says.
func (d *demo) waitRunning(t *testing.T, id string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var page struct {
			Requests []struct {
				ID      string `json:"id"`
				Running int    `json:"running"`
			} `json:"requests"`
		}
		resp, err := http.Get(d.debugURL + "/debug/reqpool?format=json")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
		}
		for _, r := range page.Requests {
			if r.ID == id && r.Running > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s not running after 30 s (last error: %v)", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// appGroup returns the process group of the app that make's session runs.
func (d *demo) appGroup(t *testing.T) int {
	sid := d.cmd.Process.Pid
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if s[open+1:close] != "dashboard" || len(f) < 4 || f[3] != strconv.Itoa(sid) {
			continue
		}
		pgrp, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatal(err)
		}
		return pgrp
	}
	t.Fatalf("no dashboard process in make's session %d", sid)
	return 0
}

// pasteBanner runs each line that the banner prints to try, as
// pasted into a shell, comment and all, for at most 3 s (the slow report
// and psql's \watch run until stopped). Each must run without error, and
// psql's must print the statements' table.
func (d *demo) pasteBanner(t *testing.T) {
	var lines []string
	_, try, _ := strings.Cut(d.output(), "\nTry:\n")
	for _, l := range strings.Split(try, "\n") {
		// Every indented line from "Try:" on, but the debug page's URL, for
		// a browser.
		if strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "  http") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) < 8 {
		t.Fatalf("%d command lines in the banner, want at least 8:\n%s", len(lines), d.output())
	}
	var wg sync.WaitGroup
	for _, line := range lines {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "sh", "-c", line)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			if err != nil && ctx.Err() == nil {
				t.Errorf("%s: %v\n%s", line, err, out)
			}
			if strings.Contains(line, "| psql ") && !strings.Contains(string(out), "running") {
				t.Errorf("%s: no table of statements in its output:\n%s", line, out)
			}
		})
	}
	wg.Wait()
}

// getOK gets url with the request id given, and returns an error unless
// the answer is 200 OK.
func getOK(url, id string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Request-ID", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}
