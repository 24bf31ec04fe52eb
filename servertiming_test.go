package reqpool

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

var serverTimingRE = regexp.MustCompile(`^reqpool;dur=([0-9.]+);desc="wall time, 2 queries waiting or running", ` +
	`reqpool-wait;dur=([0-9.]+);desc="queue wait, summed over 2 queries", ` +
	`reqpool-run;dur=([0-9.]+);desc="run time, summed over 2 queries"$`)

// TestServerTiming: with Config.ServerTiming, a handler that writes after
// its Fanout, one that flushes through http.ResponseController, and one that
// hijacks the connection all work, and the first two carry the queries'
// wait and run time; without it, no header.
func TestServerTiming(t *testing.T) {
	for _, on := range []bool{true, false} {
		p := newPool(t, Config{Workers: 1, ServerTiming: on})
		srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
			// Two queries of 20 ms on one worker: one runs while the other
			// waits, so run >= 40 ms, wait >= 20 ms, and the wall time
			// from admission to the last end >= 40 ms.
			if err := Fanout(r.Context(), sleep(20*time.Millisecond), sleep(20*time.Millisecond)); err != nil {
				WriteError(w, r, err)
				return
			}
			switch r.URL.Path {
			case "/write":
				io.WriteString(w, "ok")
			case "/flush":
				io.WriteString(w, "o")
				if err := http.NewResponseController(w).Flush(); err != nil {
					t.Errorf("Flush: %v", err)
				}
				w.(http.Flusher).Flush()
				io.WriteString(w, "k")
			case "/nothing": // net/http answers 200 after the handler returns
			case "/hijack":
				conn, rw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("Hijack: %v", err)
					return
				}
				defer conn.Close()
				rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
				rw.Flush()
			}
		}, nil)
		for _, path := range []string{"/write", "/flush", "/nothing", "/hijack"} {
			resp, err := c.Get(srv.URL + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			body, _ := io.ReadAll(bufio.NewReader(resp.Body))
			resp.Body.Close()
			st := resp.Header.Get("Server-Timing")
			if want := map[bool]string{true: "", false: "ok"}[path == "/nothing"]; resp.StatusCode != http.StatusOK || string(body) != want {
				t.Errorf("ServerTiming %v, %s: %d %q", on, path, resp.StatusCode, body)
			}
			switch {
			case !on || path == "/hijack":
				if st != "" {
					t.Errorf("ServerTiming %v, %s: Server-Timing %q, want none", on, path, st)
				}
			default:
				m := serverTimingRE.FindStringSubmatch(st)
				if m == nil {
					t.Errorf("%s: Server-Timing %q, want reqpool-wait and reqpool-run", path, st)
					continue
				}
				wall, _ := strconv.ParseFloat(m[1], 64)
				wait, _ := strconv.ParseFloat(m[2], 64)
				run, _ := strconv.ParseFloat(m[3], 64)
				if wait < 20 || run < 40 || wall < 40 || wall > wait+run {
					t.Errorf("%s: Server-Timing %q, want wait >= 20 ms, run >= 40 ms, wall time >= 40 ms and at most their sum", path, st)
				}
			}
		}
	}
}

// TestServerTimingWall: the wall time counts the time during which the
// request had queries waiting or running once, however many ran in
// parallel, and leaves out the time between its Fanouts; the sums add each
// query's time.
func TestServerTimingWall(t *testing.T) {
	p := newPool(t, Config{Workers: 4, ServerTiming: true})
	var between atomic.Int64 // nanoseconds: written by the handler
	srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		// Two Fanouts of 4 × 30 ms in parallel, 50 ms apart: about 60 ms of
		// wall time, and 240 ms of run time in all.
		for i := range 2 {
			if err := Fanout(r.Context(), repeat(4, sleep(30*time.Millisecond))...); err != nil {
				WriteError(w, r, err)
				return
			}
			if i == 0 {
				start := time.Now()
				time.Sleep(50 * time.Millisecond) // the handler's own work, no query waiting
				between.Store(int64(time.Since(start)))
			}
		}
		io.WriteString(w, "ok")
	}, nil)
	start := time.Now()
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	took := time.Since(start)
	gap := time.Duration(between.Load())
	st := resp.Header.Get("Server-Timing")
	re := regexp.MustCompile(`^reqpool;dur=([0-9.]+);desc="wall time, 8 queries waiting or running", reqpool-wait;dur=[0-9.]+;desc="queue wait, summed over 8 queries", reqpool-run;dur=([0-9.]+);desc="run time, summed over 8 queries"$`)
	m := re.FindStringSubmatch(st)
	if m == nil {
		t.Fatalf("Server-Timing %q, want %s", st, re)
	}
	wall, _ := strconv.ParseFloat(m[1], 64)
	run, _ := strconv.ParseFloat(m[2], 64)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	if wall < 60 || wall > ms(took-gap) || run < 240 {
		t.Errorf("Server-Timing %q for a request of %v with %v between its Fanouts: want wall time >= 60 ms and at most %.0f ms, run >= 240 ms",
			st, took, gap, ms(took-gap))
	}
}

func BenchmarkServerTiming(b *testing.B) {
	for _, on := range []bool{false, true} {
		p, err := New(Config{Workers: benchWorkers, ServerTiming: on})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Shutdown(context.Background()) })
		qs := repeat(benchTasks, Func(noop))
		h := Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := Fanout(r.Context(), qs...); err != nil {
				b.Error(err)
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		b.Run("servertiming="+strconv.FormatBool(on), func(b *testing.B) {
			req, _ := http.NewRequest(http.MethodGet, "/", nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}
