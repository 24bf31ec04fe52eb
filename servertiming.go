package reqpool

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// serverTiming sums how long one request's queries waited and ran. It is an
// Observer that Fanout adds for its own handle's queries when
// Config.ServerTiming is set.
type serverTiming struct {
	wait, run atomic.Int64 // nanoseconds, over the request's queries so far
}

func (t *serverTiming) QueryDone(_ context.Context, rec QueryRecord) {
	t.wait.Add(int64(rec.Wait()))
	t.run.Add(int64(rec.Run()))
}

func (t *serverTiming) Refused(context.Context, Refusal) {}

// header returns the Server-Timing value: the queries' total queue wait
// and total run time so far, in milliseconds.
func (t *serverTiming) header() string {
	b := make([]byte, 0, 48)
	b = append(b, "reqpool-wait;dur="...)
	b = strconv.AppendFloat(b, float64(t.wait.Load())/float64(time.Millisecond), 'f', 3, 64)
	b = append(b, ", reqpool-run;dur="...)
	b = strconv.AppendFloat(b, float64(t.run.Load())/float64(time.Millisecond), 'f', 3, 64)
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
