package main

import (
	"database/sql"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/reqotel"
	"github.com/reqpool/reqpool/reqprom"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// metricsHandler returns the handler of GET /metrics: a registry of its own
// (not the global one, which would mix in whatever else registers there)
// with the pool's metrics (reqprom: reqpool_*), the database/sql pool's
// (go_sql_*{db_name="dashboard"}), the Go runtime's (go_*) and the
// process's (process_*).
func metricsHandler(pool *reqpool.Pool, db *sql.DB, log *slog.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		reqprom.NewCollector(pool),
		collectors.NewDBStatsCollector(db, "dashboard"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
		Registry: reg, // counts its own errors in promhttp_metric_handler_errors_total
	})
}

// traced returns h behind otelhttp, and has reqotel report the pool's
// queries to tp; detach undoes the latter. h is the routes behind
// reqpool.Middleware: otelhttp comes first, so that the request's server
// span is in the context that Middleware binds the request's queries to,
// and each query's span is then its child. The metrics that otelhttp and
// reqotel could report go nowhere: /metrics has the pool's.
func traced(pool *reqpool.Pool, h http.Handler, tp trace.TracerProvider) (_ http.Handler, detach func(), err error) {
	noMetrics := metricnoop.NewMeterProvider()
	detach, err = reqotel.Observe(pool, reqotel.WithTracerProvider(tp), reqotel.WithMeterProvider(noMetrics))
	if err != nil {
		return nil, nil, err
	}
	h = otelhttp.NewHandler(h, "dashboard",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(noMetrics),
		// A traceparent header continues the caller's trace.
		otelhttp.WithPropagators(propagation.TraceContext{}),
	)
	return h, detach, nil
}

// nameSpan serves mux, then names the request's span, if it records, after
// the route mux matched ("GET /orgs/{id}/dashboard") and sets its
// http.route. otelhttp does that itself when the request it passed on comes
// back with a Pattern, but reqpool.Middleware hands mux a copy of the
// request, with the pool's handle in its context, and the pattern that mux
// sets stays on the copy: nameSpan goes between the two. A request that
// matches no route keeps otelhttp's name, its method alone.
func nameSpan(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r) // sets r.Pattern
		span := trace.SpanFromContext(r.Context())
		if r.Pattern == "" || !span.IsRecording() {
			return
		}
		route := r.Pattern // "GET /orgs/{id}/dashboard": the path after the method
		if _, path, ok := strings.Cut(route, " "); ok {
			route = strings.TrimSpace(path)
		}
		span.SetName(r.Method + " " + route)
		span.SetAttributes(semconv.HTTPRoute(route))
	})
}

// newTracerProvider returns an OpenTelemetry SDK TracerProvider that writes
// every span to w as one line of JSON, in batches at most a second apart,
// for -trace. Shut it down to write the last batch.
func newTracerProvider(w io.Writer) (*sdktrace.TracerProvider, error) {
	exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
	if err != nil {
		return nil, err
	}
	// Schemaless, so that it merges with the default resource whatever the
	// SDK's semconv version.
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName("dashboard")))
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithResource(res),
	), nil
}
