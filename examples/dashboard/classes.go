package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/reqpool/reqpool"
)

// The pool's priority classes (reqpool.Config.Classes), as classify names
// them.
const (
	// interactiveClass is every request but the reports: dashboards,
	// /stats, and whatever else a user waits for. Each request is a flow of
	// its own, ordered as a pool without classes orders requests. Its queue
	// is reqpool.Config.QueueSize's (reqpool.DefaultQueueSize, 1024
	// queries).
	interactiveClass = "interactive"

	// reportsClass is GET /orgs/{id}/report: slow work that nobody should
	// wait behind. Its flow is the org, so that orgs with reports waiting
	// take turns on the class's workers, however many reports each sends.
	reportsClass = "reports"
)

// The classes' defaults, for the flags of the same names.
const (
	// defaultInteractiveShare and defaultReportShare split the workers 4:1
	// while both classes have queries waiting: with 16 workers, about 13
	// for dashboards and 3 for reports. A class alone may use every worker.
	defaultInteractiveShare = 4
	defaultReportShare      = 1

	// defaultReportQueue is the most report queries that wait at once: 4
	// reports of 4 queries. Past it a report is refused with 503 at once,
	// and never an interactive request: its queue is its own.
	defaultReportQueue = 16
)

// reportQueries is the number of queries of one report: its Fanout.
const reportQueries = 4

// poolOptions are the flags that shape the pool.
type poolOptions struct {
	Workers      int  // reqpool.Config.Workers; 0: reqpool.DefaultWorkers
	ServerTiming bool // reqpool.Config.ServerTiming

	// Classes, when true, gives the pool the interactive and the reports
	// classes, with the shares and the report queue below, and classify as
	// its Classify. When false, the pool has one class and one queue for
	// every request, as a pool without Config.Classes does: -classes=false,
	// to compare.
	Classes          bool
	InteractiveShare int // the interactive class's Share; 0: reqpool.DefaultShare
	ReportShare      int // the reports class's Share; 0: reqpool.DefaultShare
	ReportQueue      int // the reports class's QueueSize; 0: Config.QueueSize
}

// defaultPoolOptions are poolOptions as the flags' defaults give them.
var defaultPoolOptions = poolOptions{
	Workers:          reqpool.DefaultWorkers,
	ServerTiming:     true,
	Classes:          true,
	InteractiveShare: defaultInteractiveShare,
	ReportShare:      defaultReportShare,
	ReportQueue:      defaultReportQueue,
}

// config returns the pool's reqpool.Config.
func (o poolOptions) config() reqpool.Config {
	c := reqpool.Config{Workers: o.Workers, ServerTiming: o.ServerTiming}
	if o.Classes {
		c.Classes = []reqpool.Class{
			// The first class is also where a request goes whose Classify
			// says "", which classify never does.
			{Name: interactiveClass, Share: o.InteractiveShare},
			{Name: reportsClass, Share: o.ReportShare, QueueSize: o.ReportQueue},
		}
		c.Classify = classify
	}
	return c
}

// newPool returns a pool with o's configuration. Beyond what reqpool.New
// checks (a negative share or queue size), it refuses a report queue too
// small for a report's queries ever to be admitted: every report would
// fail.
func newPool(o poolOptions) (*reqpool.Pool, error) {
	pool, err := reqpool.New(o.config())
	if err != nil {
		return nil, err
	}
	c := pool.Config()
	for _, k := range c.Classes {
		if k.Name == reportsClass && c.Workers+k.QueueSize < reportQueries {
			pool.Shutdown(context.Background()) // idle: nothing was served
			return nil, fmt.Errorf("-workers %d and -report-queue %d cannot hold a report's %d queries", c.Workers, k.QueueSize, reportQueries)
		}
	}
	return pool, nil
}

// classify is the pool's reqpool.Config.Classify, which reqpool.Middleware
// calls before the routes: GET /orgs/{id}/report is in the reports class,
// in the flow of its org (its id as a decimal number, so that /orgs/007
// and /orgs/7 are one flow); every other request is interactive and a flow
// of its own. A report path whose id is not a positive integer, which the
// handler answers with 400 without a query, is a flowless report.
func classify(r *http.Request) (class, flow string) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/orgs/")
	if !ok {
		return interactiveClass, ""
	}
	id, ok := strings.CutSuffix(rest, "/report")
	if !ok || id == "" || strings.Contains(id, "/") {
		return interactiveClass, ""
	}
	if n, err := strconv.ParseInt(id, 10, 64); err == nil && n > 0 {
		flow = strconv.FormatInt(n, 10)
	}
	return reportsClass, flow
}
