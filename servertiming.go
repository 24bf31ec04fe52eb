package reqpool

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// serverTiming measures one request's queries for its Server-Timing
// header. It is an Observer that Fanout adds for its own handle's queries
// when Config.ServerTiming is set.
//
// The header gives three figures, so that none is read as what it is not:
// the wall time during which the request had queries waiting or running
// (reqpool), which a browser can set beside the request's own duration; and
// the queue wait and run time summed over its queries (reqpool-wait,
// reqpool-run), which exceed the wall time when queries run in parallel,
// as their desc says.
type serverTiming struct {
	mu        sync.Mutex    // protects the fields below
	queries   int           // queries done so far
	wait, run time.Duration // summed over them
	// spans are the request's Fanouts, each from its admission to the end
	// of its last query done so far: a Fanout's queries all wait or run
	// from its admission on, so that is when it had queries waiting or
	// running. Fanouts are told apart by their admission time.
	spans []timingSpan
}

type timingSpan struct{ start, end time.Time }

func (t *serverTiming) QueryDone(_ context.Context, rec QueryRecord) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.queries++
	t.wait += rec.Wait()
	t.run += rec.Run()
	for i := len(t.spans) - 1; i >= 0; i-- {
		if sp := &t.spans[i]; sp.start.Equal(rec.Admitted) {
			if rec.Finished.After(sp.end) {
				sp.end = rec.Finished
			}
			return
		}
	}
	t.spans = append(t.spans, timingSpan{rec.Admitted, rec.Finished})
}

func (t *serverTiming) Refused(context.Context, Refusal) {}

// wall returns the time covered by the spans, overlaps counted once.
// Callers hold mu.
func (t *serverTiming) wall() time.Duration {
	slices.SortFunc(t.spans, func(a, b timingSpan) int { return a.start.Compare(b.start) })
	var total time.Duration
	var cur timingSpan
	for i, sp := range t.spans {
		switch {
		case i == 0:
			cur = sp
		case !sp.start.After(cur.end): // overlaps cur
			if sp.end.After(cur.end) {
				cur.end = sp.end
			}
		default:
			total += cur.end.Sub(cur.start)
			cur = sp
		}
	}
	return total + cur.end.Sub(cur.start)
}

// header returns the Server-Timing value, in milliseconds, for the queries
// done so far, e.g.
//
//	reqpool;dur=2003.512;desc="wall time, 4 queries waiting or running",
//	reqpool-wait;dur=0.311;desc="queue wait, summed over 4 queries",
//	reqpool-run;dur=8012.760;desc="run time, summed over 4 queries"
//
// (one line).
func (t *serverTiming) header() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := strconv.Itoa(t.queries)
	queries := " queries"
	if t.queries == 1 {
		queries = " query"
	}
	b := make([]byte, 0, 192)
	metric := func(name string, d time.Duration, desc ...string) {
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = append(b, name...)
		b = append(b, ";dur="...)
		b = strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', 3, 64)
		b = append(b, `;desc="`...)
		for _, s := range desc {
			b = append(b, s...)
		}
		b = append(b, '"')
	}
	metric("reqpool", t.wall(), "wall time, ", n, queries, " waiting or running")
	metric("reqpool-wait", t.wait, "queue wait, summed over ", n, queries)
	metric("reqpool-run", t.run, "run time, summed over ", n, queries)
	return string(b)
}

// timingWriter sets the Server-Timing header just before the response's
// header goes out: on the first WriteHeader, Write or Flush, so that a
// handler that writes after its Fanout reports that Fanout. Queries that
// end after the header has gone out are not counted. It passes Flush and
// Hijack on, and Unwrap lets http.ResponseController reach the writer it
// wraps for anything else.
type timingWriter struct {
	http.ResponseWriter
	t       *serverTiming
	stamped bool
}

func (w *timingWriter) stamp() {
	if !w.stamped {
		w.stamped = true
		w.Header().Set("Server-Timing", w.t.header())
	}
}

func (w *timingWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.stamp() // a 1xx informational header does not send the final header
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *timingWriter) Write(b []byte) (int, error) {
	w.stamp()
	return w.ResponseWriter.Write(b)
}

// Flush implements http.Flusher for handlers that assert it.
func (w *timingWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *timingWriter) FlushError() error {
	w.stamp()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker; it fails with http.ErrNotSupported when
// the wrapped writer cannot hijack.
func (w *timingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *timingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
