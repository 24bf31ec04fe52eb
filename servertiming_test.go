package reqpool

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

var serverTimingRE = regexp.MustCompile(`^reqpool-wait;dur=([0-9.]+), reqpool-run;dur=([0-9.]+)$`)

// TestServerTiming: with Config.ServerTiming, a handler that writes after
// its Fanout, one that flushes through http.ResponseController, and one that
// hijacks the connection all work, and the first two carry the queries'
// wait and run time; without it, no header.
func TestServerTiming(t *testing.T) {
	for _, on := range []bool{true, false} {
		p := newPool(t, Config{Workers: 1, ServerTiming: on})
		srv, c := serve(t, p, func(w http.ResponseWriter, r *http.Request) {
			// Two queries of 20 ms on one worker: one runs while the other
			// waits, so run >= 40 ms and wait >= 20 ms.
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
				wait, _ := strconv.ParseFloat(m[1], 64)
				run, _ := strconv.ParseFloat(m[2], 64)
				if wait < 20 || run < 40 {
					t.Errorf("%s: Server-Timing %q, want wait >= 20 ms and run >= 40 ms", path, st)
				}
			}
		}
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
