package reqotel

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/internal/reqtest"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// telemetry is an SDK set up to keep what it is given in memory.
type telemetry struct {
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	tel := &telemetry{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	tel.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(tel.spans))
	tel.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader))
	t.Cleanup(func() {
		ctx := context.Background()
		if err := tel.tp.Shutdown(ctx); err != nil {
			t.Errorf("TracerProvider.Shutdown: %v", err)
		}
		if err := tel.mp.Shutdown(ctx); err != nil {
			t.Errorf("MeterProvider.Shutdown: %v", err)
		}
	})
	return tel
}

func (tel *telemetry) options() []Option {
	return []Option{WithTracerProvider(tel.tp), WithMeterProvider(tel.mp)}
}

// metrics collects the metrics, by name.
func (tel *telemetry) metrics(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	ms := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			ms[m.Name] = m
		}
	}
	return ms
}

// querySpans returns the spans of reqotel, by request id and then by index.
func querySpans(t *testing.T, spans tracetest.SpanStubs) map[string]map[int]tracetest.SpanStub {
	t.Helper()
	out := map[string]map[int]tracetest.SpanStub{}
	for _, s := range spans {
		if s.InstrumentationScope.Name != ScopeName {
			continue
		}
		id, idx := attr(s.Attributes, keyRequestID).AsString(), int(attr(s.Attributes, keyIndex).AsInt64())
		if out[id] == nil {
			out[id] = map[int]tracetest.SpanStub{}
		}
		if _, dup := out[id][idx]; dup {
			t.Errorf("two spans for query %d of %s", idx, id)
		}
		out[id][idx] = s
	}
	return out
}

// attr returns the value of key in kvs, or an empty Value.
func attr(kvs []attribute.KeyValue, key attribute.Key) attribute.Value {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// errPanic stands for a *reqpool.PanicError in TestHTTP.
var errPanic = errors.New("a panic")

func fail(err error) reqpool.Query {
	return reqpool.Func(func(context.Context) error { return err })
}

// pgError stands in for *pq.Error and *pgconn.PgError.
type pgError struct{ code string }

func (e *pgError) Error() string    { return "pq: canceling statement due to user request" }
func (e *pgError) SQLState() string { return e.code }

// TestHTTP serves requests through otelhttp and reqpool.Middleware and
// checks the spans and metrics of their queries.
func TestHTTP(t *testing.T) {
	tel := newTelemetry(t)
	// One worker: the queries of a Fanout run one after another, in order.
	pool := newPool(t, reqpool.Config{Workers: 1, QueueSize: 8, MaxFanout: 4})
	detach, err := Observe(pool, tel.options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer detach()

	boom := errors.New("boom")
	mux := http.NewServeMux()
	fanout := func(path string, want error, qs ...reqpool.Query) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			err := reqpool.Fanout(r.Context(), qs...)
			var pe *reqpool.PanicError
			if want == errPanic && !errors.As(err, &pe) || want != errPanic && !errors.Is(err, want) {
				t.Errorf("%s: Fanout = %v, want %v", path, err, want)
			}
			if err != nil {
				reqpool.WriteError(w, r, err)
			}
		})
	}
	// 0 runs 2 ms, 1 fails, which drops 2 and 3.
	fanout("/mixed", boom, sleep(2*time.Millisecond), fail(boom), sleep(0), sleep(0))
	fanout("/ok", nil, sleep(0), sleep(time.Millisecond))
	fanout("/panic", errPanic, reqpool.Func(func(context.Context) error { panic("bug") }))
	cancelled := &pgError{code: "57014"}
	fanout("/pg", cancelled, fail(fmt.Errorf("count users: %w", cancelled)))
	fanout("/toomany", reqpool.ErrTooManyQueries, slices.Repeat([]reqpool.Query{sleep(0)}, 5)...)

	srv := httptest.NewServer(otelhttp.NewHandler(reqpool.Middleware(pool)(mux), "server",
		otelhttp.WithTracerProvider(tel.tp), otelhttp.WithMeterProvider(metricnoop.NewMeterProvider())))
	paths := []string{"/mixed", "/ok", "/panic", "/pg", "/toomany"}
	for _, path := range paths {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set(reqpool.RequestIDHeader, "req"+strings.ReplaceAll(path, "/", "-"))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	srv.Close() // waits for the handlers, and so for their spans

	spans := tel.spans.GetSpans()
	servers := map[trace.SpanID]tracetest.SpanStub{}
	serverOf := map[string]tracetest.SpanStub{} // by path
	for _, s := range spans {
		if s.SpanKind == trace.SpanKindServer {
			servers[s.SpanContext.SpanID()] = s
			serverOf[attr(s.Attributes, "url.path").AsString()] = s
		}
	}
	if len(servers) != len(paths) {
		t.Fatalf("%d server spans, want %d", len(servers), len(paths))
	}
	byReq := querySpans(t, spans)
	if n := len(byReq); n != 4 {
		t.Errorf("query spans of %d requests, want 4 (/toomany ran none)", n)
	}

	// Every query span: a child of its request's server span, within it.
	for _, path := range paths {
		server := serverOf[path]
		for i, s := range byReq["req"+strings.ReplaceAll(path, "/", "-")] {
			if s.Parent.SpanID() != server.SpanContext.SpanID() || s.SpanContext.TraceID() != server.SpanContext.TraceID() || !s.Parent.IsValid() {
				t.Errorf("%s query %d: parent %v, want the server span %v", path, i, s.Parent.SpanID(), server.SpanContext.SpanID())
			}
			if s.Name != "reqpool.query" || s.SpanKind != trace.SpanKindInternal {
				t.Errorf("%s query %d: span %q of kind %v", path, i, s.Name, s.SpanKind)
			}
			if s.StartTime.Before(server.StartTime) || s.EndTime.Before(s.StartTime) || server.EndTime.Before(s.EndTime) {
				t.Errorf("%s query %d: %v–%v, outside its server span %v–%v", path, i,
					s.StartTime, s.EndTime, server.StartTime, server.EndTime)
			}
			if w := attr(s.Attributes, keyWait); w.Type() != attribute.FLOAT64 || w.AsFloat64() < 0 || w.AsFloat64() > 10 {
				t.Errorf("%s query %d: wait_time %v", path, i, w.String())
			}
			// A pool without Classes: no class; no flow without WithFlowAttribute.
			if c, f := attr(s.Attributes, keyClass), attr(s.Attributes, keyFlow); c.Type() != attribute.EMPTY || f.Type() != attribute.EMPTY {
				t.Errorf("%s query %d: reqpool.class %v, reqpool.flow %v, want neither", path, i, c.String(), f.String())
			}
		}
	}

	// /mixed: ok, error, dropped, dropped.
	mixed := byReq["req-mixed"]
	if len(mixed) != 4 {
		t.Fatalf("/mixed: %d spans, want 4", len(mixed))
	}
	for i, want := range []string{"ok", "error", "dropped", "dropped"} {
		if got := attr(mixed[i].Attributes, keyOutcome).AsString(); got != want {
			t.Errorf("/mixed query %d: outcome %q, want %q", i, got, want)
		}
	}
	if s := mixed[0]; s.Status.Code != codes.Unset || len(s.Events) != 0 || s.EndTime.Sub(s.StartTime) < 2*time.Millisecond {
		t.Errorf("/mixed ok query: status %v, events %v, ran %v", s.Status, s.Events, s.EndTime.Sub(s.StartTime))
	}
	if s := mixed[1]; s.Status.Code != codes.Error || s.Status.Description != "boom" ||
		attr(s.Attributes, "error.type").AsString() != "*errors.errorString" ||
		len(s.Events) != 1 || s.Events[0].Name != "exception" || attr(s.Events[0].Attributes, "exception.message").AsString() != "boom" ||
		!s.Events[0].Time.Equal(s.EndTime) {
		t.Errorf("/mixed failed query: status %v, attributes %v, events %v", s.Status, s.Attributes, s.Events)
	}
	if mixed[1].StartTime.Before(mixed[0].EndTime) {
		t.Errorf("/mixed: query 1 started at %v, before query 0 ended at %v, on one worker", mixed[1].StartTime, mixed[0].EndTime)
	}
	for _, s := range []tracetest.SpanStub{mixed[2], mixed[3]} {
		// A dropped query spans its wait: from its Fanout's admission, before
		// query 0 started, to its drop, after query 1 failed.
		if s.Status.Code != codes.Unset || len(s.Events) != 0 || attr(s.Attributes, "error.type").Type() != attribute.EMPTY {
			t.Errorf("/mixed dropped query: status %v, attributes %v, events %v", s.Status, s.Attributes, s.Events)
		}
		if s.StartTime.After(mixed[0].StartTime) || s.EndTime.Before(mixed[1].EndTime) {
			t.Errorf("/mixed dropped query: %v–%v, not around the others' %v–%v", s.StartTime, s.EndTime, mixed[0].StartTime, mixed[1].EndTime)
		}
		if got, want := attr(s.Attributes, keyWait).AsFloat64(), s.EndTime.Sub(s.StartTime).Seconds(); got != want {
			t.Errorf("/mixed dropped query: wait %v, its span lasts %v", got, want)
		}
	}

	if s := byReq["req-panic"][0]; s.Status.Code != codes.Error || s.Status.Description != "panic: bug" ||
		attr(s.Attributes, keyOutcome).AsString() != "panic" || attr(s.Attributes, "error.type").AsString() != "panic" ||
		len(s.Events) != 1 || attr(s.Events[0].Attributes, "exception.message").AsString() != "bug" ||
		attr(s.Events[0].Attributes, "exception.type").AsString() != "string" ||
		!strings.Contains(attr(s.Events[0].Attributes, "exception.stacktrace").AsString(), "reqotel.TestHTTP") {
		t.Errorf("/panic: status %v, attributes %v, events %v", s.Status, s.Attributes, s.Events)
	}
	if s := byReq["req-pg"][0]; attr(s.Attributes, "error.type").AsString() != "57014" ||
		attr(s.Attributes, "db.response.status_code").AsString() != "57014" || s.Status.Code != codes.Error {
		t.Errorf("/pg: status %v, attributes %v", s.Status, s.Attributes)
	}
	if ev := serverOf["/toomany"].Events; len(ev) != 1 || ev[0].Name != "reqpool.fanout.refused" ||
		attr(ev[0].Attributes, keyReason).AsString() != "too_many" || attr(ev[0].Attributes, keyQueries).AsInt64() != 5 {
		t.Errorf("/toomany: server span events %v", ev)
	}

	// Metrics.
	ms := tel.metrics(t)
	op := histogram(t, ms, "db.client.operation.duration")
	pg := attribute.NewSet(dbSystem("postgresql"))
	wantOp := map[attribute.Set]uint64{
		pg: 3, // /mixed 0, /ok 0 and 1
		attribute.NewSet(dbSystem("postgresql"), attribute.String("error.type", "*errors.errorString")): 1,
		attribute.NewSet(dbSystem("postgresql"), attribute.String("error.type", "panic")):               1,
		attribute.NewSet(dbSystem("postgresql"), attribute.String("error.type", "57014"),
			attribute.String("db.response.status_code", "57014")): 1,
	}
	checkHistogram(t, op, wantOp)
	for _, dp := range op.DataPoints {
		if dp.Attributes.Equals(&pg) && dp.Sum < 0.001 {
			t.Errorf("db.client.operation.duration: ok queries sum to %v s, want at least 3 ms", dp.Sum)
		}
	}
	checkHistogram(t, histogram(t, ms, "reqpool.query.wait_time"), map[attribute.Set]uint64{
		outcome("ok"): 3, outcome("error"): 2, outcome("panic"): 1, outcome("dropped"): 2,
	})
	checkSum(t, ms, "reqpool.fanout.refusals", "{fanout}", map[attribute.Set]int64{
		attribute.NewSet(keyReason.String("too_many")): 1,
	})
}

func dbSystem(name string) attribute.KeyValue { return attribute.String("db.system.name", name) }

func outcome(o string) attribute.Set { return attribute.NewSet(keyOutcome.String(o)) }

// histogram returns the data of the seconds histogram name in ms, with the
// bucket boundaries of the database semantic conventions.
func histogram(t *testing.T, ms map[string]metricdata.Metrics, name string) metricdata.Histogram[float64] {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		t.Fatalf("no metric %s in %v", name, keys(ms))
	}
	if m.Unit != "s" || m.Description == "" {
		t.Errorf("%s: unit %q, description %q", name, m.Unit, m.Description)
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is a %T", name, m.Data)
	}
	for _, dp := range h.DataPoints {
		if !slices.Equal(dp.Bounds, []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}) {
			t.Errorf("%s: bounds %v", name, dp.Bounds)
		}
	}
	return h
}

func checkHistogram(t *testing.T, h metricdata.Histogram[float64], want map[attribute.Set]uint64) {
	t.Helper()
	got := map[attribute.Set]uint64{}
	for _, dp := range h.DataPoints {
		got[dp.Attributes] = dp.Count
	}
	if !mapsEqual(got, want) {
		t.Errorf("histogram counts\n got %v\nwant %v", fmtSets(got), fmtSets(want))
	}
}

func checkSum(t *testing.T, ms map[string]metricdata.Metrics, name, unit string, want map[attribute.Set]int64) {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		t.Fatalf("no metric %s in %v", name, keys(ms))
	}
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok || !s.IsMonotonic || m.Unit != unit {
		t.Fatalf("%s: %T, unit %q", name, m.Data, m.Unit)
	}
	got := map[attribute.Set]int64{}
	for _, dp := range s.DataPoints {
		got[dp.Attributes] = dp.Value
	}
	if !mapsEqual(got, want) {
		t.Errorf("%s\n got %v\nwant %v", name, fmtSets(got), fmtSets(want))
	}
}

func mapsEqual[V comparable](a, b map[attribute.Set]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func fmtSets[V any](m map[attribute.Set]V) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("{%s}: %v", k.Encoded(attribute.DefaultEncoder()), v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestObserver calls the Observer directly with what a pool may tell it.
func TestObserver(t *testing.T) {
	tel := newTelemetry(t)
	o, err := newObserver(nil, append(tel.options(), WithDBSystemName("cockroachdb"))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, r := range []reqpool.RefusalReason{reqpool.RefusedQueueFull, reqpool.RefusedQueueFull, reqpool.RefusedTooMany, reqpool.RefusedClosed, 7} {
		o.Refused(ctx, reqpool.Refusal{RequestID: "r", Queries: 3, Reason: r})
	}
	t0 := time.Now()
	rec := func(out reqpool.Outcome, err error) reqpool.QueryRecord {
		return reqpool.QueryRecord{RequestID: "r", Admitted: t0, Started: t0.Add(time.Millisecond),
			Finished: t0.Add(3 * time.Millisecond), Outcome: out, Err: err}
	}
	o.QueryDone(ctx, rec(reqpool.OutcomeOK, nil))
	o.QueryDone(ctx, rec(reqpool.OutcomeError, context.DeadlineExceeded))
	o.QueryDone(ctx, rec(reqpool.OutcomeError, nil)) // not said by reqpool: no error to record
	o.QueryDone(ctx, rec(reqpool.Outcome(9), nil))   // an outcome of a later reqpool

	ms := tel.metrics(t)
	checkSum(t, ms, "reqpool.fanout.refusals", "{fanout}", map[attribute.Set]int64{
		attribute.NewSet(keyReason.String("queue_full")): 2,
		attribute.NewSet(keyReason.String("too_many")):   1,
		attribute.NewSet(keyReason.String("closed")):     1,
		attribute.NewSet(keyReason.String("unknown")):    1,
	})
	checkHistogram(t, histogram(t, ms, "db.client.operation.duration"), map[attribute.Set]uint64{
		attribute.NewSet(dbSystem("cockroachdb")):                                                             2, // ok and the unknown outcome
		attribute.NewSet(dbSystem("cockroachdb"), attribute.String("error.type", "context.DeadlineExceeded")): 1,
		attribute.NewSet(dbSystem("cockroachdb"), attribute.String("error.type", "_OTHER")):                   1,
	})
	checkHistogram(t, histogram(t, ms, "reqpool.query.wait_time"), map[attribute.Set]uint64{
		outcome("ok"): 1, outcome("error"): 2, outcome("unknown"): 1,
	})
	for _, s := range tel.spans.GetSpans() {
		if !s.StartTime.Equal(t0.Add(time.Millisecond)) || !s.EndTime.Equal(t0.Add(3*time.Millisecond)) ||
			attr(s.Attributes, keyWait).AsFloat64() != 0.001 {
			t.Errorf("span %v–%v, wait %v: not the record's", s.StartTime, s.EndTime, attr(s.Attributes, keyWait).String())
		}
		if s.Parent.IsValid() {
			t.Errorf("span with no request span has parent %v", s.Parent)
		}
	}
}

func TestErrorType(t *testing.T) {
	type myErr struct{ error }
	for _, tc := range []struct {
		out           reqpool.Outcome
		err           error
		errType, code string
	}{
		{reqpool.OutcomeError, errors.New("x"), "*errors.errorString", ""},
		{reqpool.OutcomeError, fmt.Errorf("wrapped: %w", myErr{errors.New("x")}), "github.com/reqpool/reqpool/reqotel.myErr", ""},
		{reqpool.OutcomeError, fmt.Errorf("q: %w", &pgError{"40001"}), "40001", "40001"},
		{reqpool.OutcomeError, &pgError{""}, "*reqotel.pgError", ""},
		{reqpool.OutcomeError, context.Canceled, "context.Canceled", ""},
		{reqpool.OutcomeError, fmt.Errorf("q: %w", context.DeadlineExceeded), "context.DeadlineExceeded", ""},
		{reqpool.OutcomeError, fmt.Errorf("q: %w (%w)", &pgError{"57014"}, context.Canceled), "57014", "57014"},
		{reqpool.OutcomePanic, &reqpool.PanicError{Value: &pgError{"40001"}}, "panic", ""},
		{reqpool.OutcomePanic, errors.New("reqpool: query called runtime.Goexit"), "panic", ""},
	} {
		errType, code := errorType(reqpool.QueryRecord{Outcome: tc.out, Err: tc.err})
		if errType != tc.errType || code != tc.code {
			t.Errorf("errorType(%v, %v) = %q, %q; want %q, %q", tc.out, tc.err, errType, code, tc.errType, tc.code)
		}
	}
}

// TestDetach checks that nothing is reported once detached.
func TestDetach(t *testing.T) {
	tel := newTelemetry(t)
	pool := newPool(t, reqpool.Config{Workers: 2})
	detach, err := Observe(pool, tel.options()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, release := pool.NewContext(context.Background())
	defer release()
	if err := reqpool.Fanout(ctx, sleep(0), sleep(0)); err != nil {
		t.Fatal(err)
	}
	// reqpool.limit is the pool's Stats.Limit, while attached.
	m, ok := tel.metrics(t)["reqpool.limit"]
	if g, isGauge := m.Data.(metricdata.Gauge[int64]); !ok || !isGauge || len(g.DataPoints) != 1 || g.DataPoints[0].Value != 2 || m.Unit != "{query}" {
		t.Errorf("reqpool.limit: %+v, want one point of 2 {query}", m)
	}
	detach()
	if err := reqpool.Fanout(ctx, sleep(0), sleep(0)); err != nil {
		t.Fatal(err)
	}
	if n := len(tel.spans.GetSpans()); n != 2 {
		t.Errorf("%d spans, want 2 (before detach)", n)
	}
	if _, ok := tel.metrics(t)["reqpool.limit"]; ok {
		t.Error("reqpool.limit is still reported after detach")
	}
}

// TestGlobalProviders checks that Observe without options reports to the
// global providers. It leaves no-op providers installed.
func TestGlobalProviders(t *testing.T) {
	tel := newTelemetry(t)
	pool := newPool(t, reqpool.Config{Workers: 2})
	otel.SetTracerProvider(tel.tp)
	otel.SetMeterProvider(tel.mp)
	defer func() {
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		otel.SetMeterProvider(metricnoop.NewMeterProvider())
	}()
	detach, err := Observe(pool)
	if err != nil {
		t.Fatal(err)
	}
	defer detach()

	ctx, release := pool.NewContext(context.Background())
	defer release()
	if err := reqpool.Fanout(ctx, sleep(0), sleep(0)); err != nil {
		t.Fatal(err)
	}
	if n := len(tel.spans.GetSpans()); n != 2 {
		t.Errorf("%d spans, want 2", n)
	}
	checkHistogram(t, histogram(t, tel.metrics(t), "db.client.operation.duration"), map[attribute.Set]uint64{
		attribute.NewSet(dbSystem("postgresql")): 2,
	})
}

func TestObserveNilPool(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Observe(nil) did not panic")
		}
	}()
	Observe(nil)
}

// TestClasses serves requests of two classes, whose Config.Classify reads
// the class and the flow from the URL, through otelhttp and
// reqpool.Middleware, fills the batch class's queue so that one of its
// requests is refused, and checks that every span, refusal event and
// metric data point has its reqpool.class, and that reqpool.flow is on
// spans and events only WithFlowAttribute, and never on a metric.
func TestClasses(t *testing.T) {
	for _, withFlow := range []bool{false, true} {
		t.Run(fmt.Sprint("flow=", withFlow), func(t *testing.T) { testClasses(t, withFlow) })
	}
}

func testClasses(t *testing.T, withFlow bool) {
	tel := newTelemetry(t)
	pool := newPool(t, reqpool.Config{
		Workers: 1, MaxFanout: 2,
		Classes: []reqpool.Class{{Name: "interactive", Share: 3}, {Name: "batch", QueueSize: 1}},
		Classify: func(r *http.Request) (class, flow string) {
			return r.URL.Query().Get("class"), r.URL.Query().Get("flow")
		},
	})
	opts := tel.options()
	if withFlow {
		opts = append(opts, WithFlowAttribute())
	}
	detach, err := Observe(pool, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer detach()

	hold, started := make(chan struct{}), make(chan struct{})
	unhold := sync.OnceFunc(func() { close(hold) })
	defer unhold() // before srv.Close waits for the handlers, if the test fails
	held := reqpool.Func(func(context.Context) error {
		close(started)
		<-hold
		return nil
	})
	boom := errors.New("boom")
	mux := http.NewServeMux()
	fanout := func(path string, qs ...reqpool.Query) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if err := reqpool.Fanout(r.Context(), qs...); err != nil {
				reqpool.WriteError(w, r, err)
			}
		})
	}
	fanout("/ok", sleep(0), sleep(0))
	fanout("/hold", held, sleep(0)) // the only worker, and the batch queue full
	fanout("/three", sleep(0), sleep(0), sleep(0))
	fanout("/fail", fail(boom))
	srv := httptest.NewServer(otelhttp.NewHandler(reqpool.Middleware(pool)(mux), "server",
		otelhttp.WithTracerProvider(tel.tp), otelhttp.WithMeterProvider(metricnoop.NewMeterProvider())))
	defer srv.Close()
	get := func(path, id string, want int) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set(reqpool.RequestIDHeader, id)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, want)
		}
	}

	get("/ok?class=interactive&flow=user-1", "req-ok", http.StatusOK)
	var wg sync.WaitGroup
	wg.Go(func() { get("/hold?class=batch&flow=tenant-a", "req-hold", http.StatusOK) })
	<-started
	get("/ok?class=batch&flow=tenant-b", "req-full", http.StatusServiceUnavailable)
	get("/three?class=interactive&flow=user-2", "req-three", http.StatusInternalServerError)
	unhold()
	wg.Wait()
	get("/fail?class=batch", "req-fail", http.StatusInternalServerError) // no flow
	srv.Close()                                                          // waits for the handlers, and so for their spans

	// Spans: each query's has its request's class, and its flow only
	// WithFlowAttribute.
	byReq := querySpans(t, tel.spans.GetSpans())
	for id, want := range map[string]struct {
		class, flow string
		n           int
	}{
		"req-ok":   {"interactive", "user-1", 2},
		"req-hold": {"batch", "tenant-a", 2},
		"req-fail": {"batch", "", 1},
	} {
		if len(byReq[id]) != want.n {
			t.Errorf("%s: %d query spans, want %d", id, len(byReq[id]), want.n)
		}
		if !withFlow {
			want.flow = ""
		}
		for i, s := range byReq[id] {
			if got := attr(s.Attributes, keyClass); got.AsString() != want.class {
				t.Errorf("%s query %d: reqpool.class %q, want %q", id, i, got.AsString(), want.class)
			}
			if got := attr(s.Attributes, keyFlow); got.AsString() != want.flow || (want.flow == "") != (got.Type() == attribute.EMPTY) {
				t.Errorf("%s query %d: reqpool.flow %q (%v), want %q", id, i, got.AsString(), got.Type(), want.flow)
			}
		}
	}
	if n := len(byReq); n != 3 {
		t.Errorf("query spans of %d requests, want 3: the refused ones ran none", n)
	}

	// Refusal events, on the requests' server spans.
	events := map[string][]attribute.KeyValue{} // by reason
	for _, s := range tel.spans.GetSpans() {
		for _, ev := range s.Events {
			if ev.Name == refusedEvent {
				events[attr(ev.Attributes, keyReason).AsString()] = ev.Attributes
			}
		}
	}
	for reason, want := range map[string]struct{ class, flow string }{
		"queue_full": {"batch", "tenant-b"},
		"too_many":   {"interactive", "user-2"},
	} {
		ev, ok := events[reason]
		if !ok {
			t.Errorf("no %s event %s", refusedEvent, reason)
			continue
		}
		if !withFlow {
			want.flow = ""
		}
		if attr(ev, keyClass).AsString() != want.class || attr(ev, keyFlow).AsString() != want.flow {
			t.Errorf("%s event %s: attributes %v, want class %q, flow %q", refusedEvent, reason, ev, want.class, want.flow)
		}
	}

	// Metrics: by class, never by flow.
	ms := tel.metrics(t)
	class := func(name string) attribute.KeyValue { return keyClass.String(name) }
	checkHistogram(t, histogram(t, ms, "db.client.operation.duration"), map[attribute.Set]uint64{
		attribute.NewSet(dbSystem("postgresql"), class("interactive")):                                                  2,
		attribute.NewSet(dbSystem("postgresql"), class("batch")):                                                        2,
		attribute.NewSet(dbSystem("postgresql"), class("batch"), attribute.String("error.type", "*errors.errorString")): 1,
	})
	checkHistogram(t, histogram(t, ms, "reqpool.query.wait_time"), map[attribute.Set]uint64{
		attribute.NewSet(class("interactive"), keyOutcome.String("ok")): 2,
		attribute.NewSet(class("batch"), keyOutcome.String("ok")):       2,
		attribute.NewSet(class("batch"), keyOutcome.String("error")):    1,
	})
	checkSum(t, ms, "reqpool.fanout.refusals", "{fanout}", map[attribute.Set]int64{
		attribute.NewSet(class("batch"), keyReason.String("queue_full")):     1,
		attribute.NewSet(class("interactive"), keyReason.String("too_many")): 1,
	})
}

// TestUnknownClass: a class that the pool's Config does not name, which
// reqpool does not report, is reported under its own name all the same.
func TestUnknownClass(t *testing.T) {
	tel := newTelemetry(t)
	o, err := newObserver([]string{"a", "b"}, tel.options()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	for _, class := range []string{"a", "ghost", "ghost", ""} {
		o.QueryDone(ctx, reqpool.QueryRecord{Class: class, Admitted: t0, Started: t0, Finished: t0.Add(time.Millisecond)})
		o.Refused(ctx, reqpool.Refusal{Class: class, Reason: reqpool.RefusedQueueFull})
	}
	o.QueryDone(ctx, reqpool.QueryRecord{Class: "a", Outcome: reqpool.Outcome(9)}) // an outcome of a later reqpool
	o.Refused(ctx, reqpool.Refusal{Class: "a", Reason: 7})

	ms := tel.metrics(t)
	okIn := func(class ...attribute.KeyValue) attribute.Set {
		return attribute.NewSet(append(class, keyOutcome.String("ok"))...)
	}
	checkHistogram(t, histogram(t, ms, "reqpool.query.wait_time"), map[attribute.Set]uint64{
		okIn(keyClass.String("a")): 1, okIn(keyClass.String("ghost")): 2, okIn(): 1,
		attribute.NewSet(keyClass.String("a"), keyOutcome.String("unknown")): 1,
	})
	checkSum(t, ms, "reqpool.fanout.refusals", "{fanout}", map[attribute.Set]int64{
		attribute.NewSet(keyClass.String("a"), keyReason.String("queue_full")):     1,
		attribute.NewSet(keyClass.String("ghost"), keyReason.String("queue_full")): 2,
		attribute.NewSet(keyReason.String("queue_full")):                           1,
		attribute.NewSet(keyClass.String("a"), keyReason.String("unknown")):        1,
	})
}

var (
	newPool = reqtest.NewPool
	sleep   = reqtest.Sleep
)
