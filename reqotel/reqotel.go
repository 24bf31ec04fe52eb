// Package reqotel reports a reqpool.Pool's queries to OpenTelemetry: a span
// per query, child of the request's span, and metrics of run time, queue
// wait and refusals.
//
//	detach, err := reqotel.Observe(pool) // the global TracerProvider and MeterProvider
//	if err != nil { ... }
//	defer detach()
//	handler := otelhttp.NewHandler(reqpool.Middleware(pool)(mux), "server")
//
// Wrap the server with otelhttp (or anything that puts the request's span in
// its context) outside reqpool.Middleware: each query's span is then a child
// of the request's span.
//
// # Spans
//
// Each query that ends gives one span named "reqpool.query", of kind
// Internal, made after the fact from the query's timestamps, so it costs
// nothing while the query runs. A query that ran spans from its start to its
// return, so the span's duration is the query's run time, the same value as
// db.client.operation.duration. A dropped query (its request ended, a sibling
// failed, or Shutdown ran out of time before it started) still gets a span,
// so that a trace shows every query of a Fanout: it spans the time it spent
// queued, from its Fanout's admission to its drop, and its status is left
// unset, since the failure that dropped it is recorded where it happened.
//
// Attributes, on every span:
//
//	reqpool.request_id      string   the request id (reqpool.Middleware's X-Request-ID)
//	reqpool.query.index     int      the query's position in its Fanout call
//	reqpool.query.wait_time float64  seconds from its Fanout's admission to its start (or drop)
//	reqpool.query.outcome   string   "ok", "error", "panic", "cancelled" (an error after its Fanout's context ended) or "dropped"
//	reqpool.class           string   the request's priority class (Class.Name), on a pool with Config.Classes
//	reqpool.flow            string   the request's flow (Config.Classify), WithFlowAttribute only, if it has one
//
// A query that returned an error, or panicked, has status Error, an
// "exception" event at its end, and error.type (and db.response.status_code
// when the error carries a SQLSTATE) as below. The event of an error is
// Span.RecordError's; that of a panic carries the panic value as
// exception.message and the panicking goroutine's stack as
// exception.stacktrace.
//
// A refused Fanout adds an event "reqpool.fanout.refused" to the span in
// its context (the request's), with reqpool.refusal.reason ("queue_full",
// "too_many", "closed"), reqpool.fanout.queries, and reqpool.class and
// reqpool.flow as on the spans.
//
// # Classes and flows
//
// On a pool with Config.Classes, every span, refusal event and metric
// measurement has reqpool.class, the Class.Name of the query's request. A
// pool without Classes has one class, named "", and reports no
// reqpool.class at all, as before classes existed: an empty string is a
// value to OpenTelemetry (unlike Prometheus, which stores an empty label as
// none), and would only add a series per metric. Class names are a small
// set fixed by the Config, fit for metrics.
//
// The flow that Config.Classify names is never a metric attribute: its
// values (a tenant, a user, an API key) are unbounded, and each would be a
// series of its own. A span is one request's, so its cardinality is no
// concern there, but a flow may name a user or carry a key that should not
// reach the tracing backend: reqpool.flow is on spans and refusal events
// only WithFlowAttribute, and never for a request without a flow.
//
// # Metrics
//
//	db.client.operation.duration  histogram  s         run time of each query that ran (not of dropped ones)
//	reqpool.query.wait_time       histogram  s         queue wait of each query, dropped ones included
//	reqpool.fanout.refusals       counter    {fanout}  Fanouts refused as a whole
//	reqpool.limit                 gauge      {query}   the most queries that execute at once now (Stats.Limit): Workers, or fewer in a connection shortage
//
// db.client.operation.duration follows OpenTelemetry's database semantic
// conventions (semconv v1.43.0): db.system.name ("postgresql" unless
// WithDBSystemName says otherwise), and for a failed query error.type and,
// when available, db.response.status_code. Its buckets are the ones the
// conventions recommend, [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10] s;
// reqpool.query.wait_time uses the same, so the two compare bucket by bucket.
// reqpool.query.wait_time has reqpool.query.outcome, so that its count by
// outcome is the count of queries by outcome; reqpool.fanout.refusals has
// reqpool.refusal.reason. All three have reqpool.class on a pool with
// Classes. No metric carries the request id or the flow, whose values are
// unbounded.
//
// error.type is, in this order: "panic" for a query that panicked (or called
// runtime.Goexit); the error's SQLSTATE when an error in its chain has a
// SQLState() string method, as *pq.Error and *pgconn.PgError do (for
// example "57014" for a cancelled statement); "context.Canceled" or
// "context.DeadlineExceeded" for an error that matches one; else the type of
// the error, as semconv.ErrorType gives it ("*errors.errorString" for an
// errors.New).
//
// A driver instrumented by OpenTelemetry too (otelsql, otelpgx) may emit
// its own db.client.operation.duration, of each statement rather than each
// query: the two are told apart by their instrumentation scope, ScopeName.
//
// # Cost
//
// The Observer runs on the query's goroutine as the query ends, and sets
// attributes and events only on a span that records. On a 2-core machine,
// against about 0.5–0.7 µs for a Fanout of 8 no-op queries with nothing
// attached (see BenchmarkObserver), it adds per query: about 0.3 µs and 5
// allocations with no SDK installed (the global providers' defaults), most
// of it in OpenTelemetry's global tracer; about 0.75 µs with the SDK for a
// request that is not sampled (the metrics, mostly); and 2–3 µs with the
// SDK for a sampled one. reqpool.class adds no allocation, and about 0.1 µs
// a query with the SDK, mostly the metrics' hashing of an attribute set of
// two (BenchmarkQueryDone). A database round trip is 100 µs or more.
package reqotel

import (
	"context"
	"errors"
	"fmt"

	"github.com/reqpool/reqpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope (the tracer's and the meter's name)
// of everything reqotel reports.
const ScopeName = "github.com/reqpool/reqpool/reqotel"

// The names reqotel reports under, as listed in the package documentation.
const (
	spanName      = "reqpool.query"
	refusedEvent  = "reqpool.fanout.refused"
	opDuration    = "db.client.operation.duration"
	waitTimeName  = "reqpool.query.wait_time"
	refusalsName  = "reqpool.fanout.refusals"
	limitName     = "reqpool.limit"
	keyRequestID  = attribute.Key("reqpool.request_id")
	keyIndex      = attribute.Key("reqpool.query.index")
	keyWait       = attribute.Key("reqpool.query.wait_time")
	keyOutcome    = attribute.Key("reqpool.query.outcome")
	keyReason     = attribute.Key("reqpool.refusal.reason")
	keyQueries    = attribute.Key("reqpool.fanout.queries")
	keyClass      = attribute.Key("reqpool.class")
	keyFlow       = attribute.Key("reqpool.flow")
	defaultSystem = "postgresql"
)

// internal is the span kind of every span, made once.
var internal = trace.WithSpanKind(trace.SpanKindInternal)

// buckets are the boundaries, in seconds, that the database semantic
// conventions recommend for db.client.operation.duration.
var buckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}

// An Option configures Observe.
type Option func(*config)

type config struct {
	tp       trace.TracerProvider
	mp       metric.MeterProvider
	dbSystem string
	flow     bool
}

// WithTracerProvider makes Observe take its tracer from tp instead of
// otel.GetTracerProvider(). A nil tp means the global one.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider makes Observe take its meter from mp instead of
// otel.GetMeterProvider(). A nil mp means the global one.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithDBSystemName sets the db.system.name of db.client.operation.duration:
// "postgresql" unless set, as the semantic conventions' well-known values
// spell it. Use one of those values for another database (for example
// "mysql", "cockroachdb", "other_sql"). An empty name means "postgresql".
func WithDBSystemName(name string) Option {
	return func(c *config) { c.dbSystem = name }
}

// WithFlowAttribute adds reqpool.flow, the flow that Config.Classify named
// for the request, to every span and refusal event of a request with a
// flow. It is off by default: a flow may be a user id or an API key, which
// the spans would take to the tracing backend. It is never an attribute of
// a metric, whose series it would multiply without bound.
func WithFlowAttribute() Option {
	return func(c *config) { c.flow = true }
}

// Observe attaches to p an Observer that reports its queries and refusals
// to OpenTelemetry, as the package documentation describes, and returns a
// function that detaches it again. The providers are read once, here: call
// it after installing the SDK (otel.SetTracerProvider, otel.SetMeterProvider),
// or before, in which case OpenTelemetry's global defaults forward to the
// first SDK installed.
//
// Observe fails only if the MeterProvider refuses to create one of the
// instruments, or to register the callback of reqpool.limit: it then
// attaches nothing, returns that error, and a detach that does nothing.
// reqpool.limit has no attribute that names the pool: observe one pool per
// MeterProvider, or the pools' limits share one series. It panics if p is nil, like reqpool.Middleware. Once
// attached, nothing it does can fail: the SDK reports its own failures (an
// exporter's) to otel.Handle. Spans end on the query's goroutine, so give
// the SDK a batching span processor (sdktrace.WithBatcher), not a
// synchronous one, which would export on it. Observing one pool twice
// reports everything twice.
func Observe(p *reqpool.Pool, opts ...Option) (detach func(), err error) {
	if p == nil {
		panic("reqotel: Observe of a nil *reqpool.Pool")
	}
	var classes []string
	for _, k := range p.Config().Classes {
		classes = append(classes, k.Name)
	}
	o, err := newObserver(classes, opts...)
	if err != nil {
		return func() {}, err
	}
	unregister, err := observeLimit(p, opts...)
	if err != nil {
		return func() {}, err
	}
	detachObserver := p.Observe(o)
	return func() {
		detachObserver()
		unregister()
	}, nil
}

// observeLimit reports reqpool.limit, read from p.Stats at each collection,
// and returns what stops it.
func observeLimit(p *reqpool.Pool, opts ...Option) (unregister func(), err error) {
	c := newConfig(opts)
	meter := c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	gauge, err := meter.Int64ObservableGauge(limitName,
		metric.WithDescription("The most queries that execute at once now: the pool's Workers, or fewer while the database refuses new connections for lack of slots (reqpool Stats.Limit)."),
		metric.WithUnit("{query}"))
	if err != nil {
		return nil, fmt.Errorf("reqotel: %w", err)
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(gauge, int64(p.Stats().Limit))
		return nil
	}, gauge)
	if err != nil {
		return nil, fmt.Errorf("reqotel: %w", err)
	}
	return func() { reg.Unregister() }, nil
}

// newConfig applies opts, and fills in the global providers where they
// name none.
func newConfig(opts []Option) config {
	var c config
	for _, opt := range opts {
		opt(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	return c
}

// observer is the reqpool.Observer that Observe attaches.
type observer struct {
	tracer     trace.Tracer
	opDuration metric.Float64Histogram
	waitTime   metric.Float64Histogram
	refusals   metric.Int64Counter
	dbSystem   attribute.KeyValue
	flow       bool // WithFlowAttribute

	// classes has the measurement options of each class of the pool, made
	// once, so that the common paths allocate nothing for them; a pool
	// without Classes has one, named "". Read-only after newObserver.
	classes []*classOpts
}

// classOpts are the measurement options of one class.
type classOpts struct {
	name        string
	attrs       []attribute.KeyValue    // reqpool.class, or none for the class "" of a pool without Classes
	okOpts      []metric.RecordOption   // db.client.operation.duration of a query that succeeded
	waitOpts    [][]metric.RecordOption // reqpool.query.wait_time, by outcome
	refusalOpts [][]metric.AddOption    // reqpool.fanout.refusals, by reason
}

var _ reqpool.Observer = (*observer)(nil)

// newObserver returns the observer of a pool with the given classes (the
// names of Config.Classes; none for a pool without).
func newObserver(classes []string, opts ...Option) (*observer, error) {
	c := newConfig(opts)
	if c.dbSystem == "" {
		c.dbSystem = defaultSystem
	}
	o := &observer{
		tracer:   c.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		dbSystem: semconv.DBSystemNameKey.String(c.dbSystem),
		flow:     c.flow,
	}
	meter := c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	var err1, err2, err3 error
	o.opDuration, err1 = meter.Float64Histogram(opDuration,
		metric.WithDescription("Duration of database client operations: the run time of each reqpool query that ran."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(buckets...))
	o.waitTime, err2 = meter.Float64Histogram(waitTimeName,
		metric.WithDescription("Time each reqpool query waited in the queue, from its Fanout's admission to its start or drop."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(buckets...))
	o.refusals, err3 = meter.Int64Counter(refusalsName,
		metric.WithDescription("Fanouts that the pool refused as a whole, by reason."),
		metric.WithUnit("{fanout}"))
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("reqotel: %w", err)
	}

	if len(classes) == 0 {
		classes = []string{""}
	}
	for _, name := range classes {
		o.classes = append(o.classes, o.newClassOpts(name))
	}
	return o, nil
}

// newClassOpts makes the measurement options of the class name.
func (o *observer) newClassOpts(name string) *classOpts {
	k := &classOpts{name: name}
	if name != "" {
		k.attrs = []attribute.KeyValue{keyClass.String(name)}
	}
	set := func(kv attribute.KeyValue) attribute.Set {
		return attribute.NewSet(append(k.attrs[:len(k.attrs):len(k.attrs)], kv)...)
	}
	k.okOpts = []metric.RecordOption{metric.WithAttributeSet(set(o.dbSystem))}
	for out := reqpool.OutcomeOK; out <= reqpool.OutcomeCancelled; out++ {
		k.waitOpts = append(k.waitOpts, []metric.RecordOption{metric.WithAttributeSet(set(keyOutcome.String(out.String())))})
	}
	for r := reqpool.RefusedQueueFull; r <= reqpool.RefusedClosed; r++ {
		k.refusalOpts = append(k.refusalOpts, []metric.AddOption{metric.WithAttributeSet(set(keyReason.String(r.String())))})
	}
	return k
}

// class returns the measurement options of the class name: the pool's,
// made once, or, for a class that the pool's Config does not name (which
// reqpool does not report), options made anew.
func (o *observer) class(name string) *classOpts {
	for _, k := range o.classes {
		if k.name == name {
			return k
		}
	}
	return o.newClassOpts(name)
}

// requestAttrs returns the attributes that a span or event of a request of
// class k and flow has: reqpool.class, and reqpool.flow WithFlowAttribute,
// for those that are not "", followed by more.
func (o *observer) requestAttrs(k *classOpts, flow string, more ...attribute.KeyValue) []attribute.KeyValue {
	withFlow := o.flow && flow != ""
	n := len(k.attrs) + len(more)
	if withFlow {
		n++
	}
	kvs := make([]attribute.KeyValue, 0, n)
	kvs = append(kvs, k.attrs...)
	if withFlow {
		kvs = append(kvs, keyFlow.String(flow))
	}
	return append(kvs, more...)
}

// QueryDone makes the query's span and records its measurements.
func (o *observer) QueryDone(ctx context.Context, rec reqpool.QueryRecord) {
	wait := rec.Wait().Seconds()
	start := rec.Started
	if rec.Outcome == reqpool.OutcomeDropped {
		start = rec.Admitted
	}
	// The attributes, and the exception, are set only on a span that
	// records: a tracer that records nothing costs the Start alone.
	ctx, span := o.tracer.Start(ctx, spanName, trace.WithTimestamp(start), internal)
	failed := rec.Outcome == reqpool.OutcomeError || rec.Outcome == reqpool.OutcomePanic || rec.Outcome == reqpool.OutcomeCancelled
	var errAttrs []attribute.KeyValue
	if failed {
		errType, code := errorType(rec)
		errAttrs = append(errAttrs, semconv.ErrorTypeKey.String(errType))
		if code != "" {
			errAttrs = append(errAttrs, semconv.DBResponseStatusCodeKey.String(code))
		}
	}
	k := o.class(rec.Class)
	if span.IsRecording() {
		span.SetAttributes(o.requestAttrs(k, rec.Flow,
			keyRequestID.String(rec.RequestID),
			keyIndex.Int(rec.Index),
			keyWait.Float64(wait),
			keyOutcome.String(rec.Outcome.String()),
		)...)
		if failed {
			recordFailure(span, rec, errAttrs)
		}
		span.End(trace.WithTimestamp(rec.Finished))
	} else {
		span.End()
	}

	if o.waitTime.Enabled(ctx) {
		if int(rec.Outcome) < len(k.waitOpts) {
			o.waitTime.Record(ctx, wait, k.waitOpts[rec.Outcome]...)
		} else {
			o.waitTime.Record(ctx, wait, metric.WithAttributes(append(k.attrs[:len(k.attrs):len(k.attrs)], keyOutcome.String(rec.Outcome.String()))...))
		}
	}
	if rec.Outcome != reqpool.OutcomeDropped && o.opDuration.Enabled(ctx) {
		run := rec.Run().Seconds()
		if failed {
			o.opDuration.Record(ctx, run, metric.WithAttributes(append(append(errAttrs, o.dbSystem), k.attrs...)...))
		} else {
			o.opDuration.Record(ctx, run, k.okOpts...)
		}
	}
}

// recordFailure sets span's status to Error and adds the exception event of
// the failed query rec.
func recordFailure(span trace.Span, rec reqpool.QueryRecord, errAttrs []attribute.KeyValue) {
	span.SetAttributes(errAttrs...)
	at := trace.WithTimestamp(rec.Finished)
	if pe, ok := rec.Err.(*reqpool.PanicError); ok && rec.Outcome == reqpool.OutcomePanic {
		msg := fmt.Sprint(pe.Value)
		span.AddEvent(semconv.ExceptionEventName, at, trace.WithAttributes(
			semconv.ExceptionTypeKey.String(fmt.Sprintf("%T", pe.Value)),
			semconv.ExceptionMessageKey.String(msg),
			semconv.ExceptionStacktraceKey.String(string(pe.Stack)),
		))
		span.SetStatus(codes.Error, "panic: "+msg)
		return
	}
	if rec.Err != nil {
		span.RecordError(rec.Err, at)
		span.SetStatus(codes.Error, rec.Err.Error())
		return
	}
	span.SetStatus(codes.Error, rec.Outcome.String())
}

// errorType returns the error.type of the failed query rec, and its
// db.response.status_code if it has one; see the package documentation.
func errorType(rec reqpool.QueryRecord) (errType, code string) {
	err := rec.Err
	if rec.Outcome == reqpool.OutcomePanic {
		return "panic", ""
	}
	var coded interface{ SQLState() string }
	if errors.As(err, &coded) {
		if c := coded.SQLState(); c != "" {
			return c, c
		}
	}
	switch {
	case err == nil:
		return semconv.ErrorTypeOther.Value.AsString(), ""
	case errors.Is(err, context.Canceled):
		return "context.Canceled", ""
	case errors.Is(err, context.DeadlineExceeded):
		return "context.DeadlineExceeded", ""
	}
	return semconv.ErrorType(err).Value.AsString(), ""
}

// Refused counts the refusal and adds an event to the span in ctx.
func (o *observer) Refused(ctx context.Context, ref reqpool.Refusal) {
	k := o.class(ref.Class)
	if o.refusals.Enabled(ctx) {
		if int(ref.Reason) < len(k.refusalOpts) {
			o.refusals.Add(ctx, 1, k.refusalOpts[ref.Reason]...)
		} else {
			o.refusals.Add(ctx, 1, metric.WithAttributes(append(k.attrs[:len(k.attrs):len(k.attrs)], keyReason.String(ref.Reason.String()))...))
		}
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(refusedEvent, trace.WithAttributes(o.requestAttrs(k, ref.Flow,
			keyReason.String(ref.Reason.String()),
			keyQueries.Int(ref.Queries),
		)...))
	}
}
