package debugpage

import (
	"strconv"
	"time"
)

// view is what the page shows, and its JSON: its tagged fields are the
// JSON's, in its order. The fields tagged "-" are the page's alone.
type view struct {
	Time      time.Time    `json:"time"`
	Config    any          `json:"config"`   // Snapshot.Config
	Stats     any          `json:"stats"`    // Snapshot.Stats
	Requests  []requestRow `json:"requests"` // never nil: [] in JSON
	Window    windowSpan   `json:"window"`
	QueueWait distribution `json:"queue_wait"`
	RunTime   distribution `json:"run_time"`
	Refresh   int          `json:"-"` // seconds between reloads

	// The page's alone, as in Snapshot: Classes is nil when the page shows
	// no classes.
	QueueBound int     `json:"-"`
	Classes    []Class `json:"-"`
}

// requestRow is one live request, as the page and the JSON show it.
type requestRow struct {
	ID      string  `json:"id"`
	Class   string  `json:"class"`
	Flow    string  `json:"flow"`
	Age     seconds `json:"age_seconds"` // since it registered
	Queued  int     `json:"queued"`
	Running int     `json:"running"`
	Place   int     `json:"place"`
}

// windowSpan says what the distributions cover: the latest Queries queries
// that ran, the oldest of which ended at Since.
type windowSpan struct {
	Queries int       `json:"queries"`
	Since   time.Time `json:"since,omitzero"`
}

// distribution summarises one kind of duration over the window.
type distribution struct {
	P50   seconds `json:"p50_seconds"`
	P90   seconds `json:"p90_seconds"`
	P99   seconds `json:"p99_seconds"`
	Max   seconds `json:"max_seconds"`
	Chart chart   `json:"-"` // empty when the window is
}

// card is one distribution's card on the page.
type card struct {
	Title   string
	Summary distribution
	Window  windowSpan
}

// Distributions returns the page's distribution cards.
func (v view) Distributions() []card {
	return []card{{"Queue wait", v.QueueWait, v.Window}, {"Run time", v.RunTime, v.Window}}
}

// seconds is a duration that JSON gives as a number of seconds and the page
// shows rounded to three digits.
type seconds time.Duration

// MarshalJSON implements json.Marshaler.
func (s seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(s).Seconds(), 'f', -1, 64), nil
}

// String implements fmt.Stringer, for the page.
func (s seconds) String() string { return roundDuration(time.Duration(s)).String() }

// view takes a snapshot and reads the window, and computes what the page
// shows; the sorting and the percentiles run on copies, under no lock.
func (h *Handler) view() view {
	s := h.source()
	v := view{Time: s.Time, Config: s.Config, Stats: s.Stats, Refresh: refresh, QueueBound: s.QueueBound, Classes: s.Classes}
	v.Requests = make([]requestRow, len(s.Requests))
	for i, r := range s.Requests {
		v.Requests[i] = requestRow{ID: r.ID, Class: r.Class, Flow: r.Flow, Age: seconds(s.Time.Sub(r.Since)),
			Queued: r.Queued, Running: r.Running, Place: r.Place}
	}
	waits, runs, since := h.window.read()
	v.Window = windowSpan{Queries: len(waits), Since: since}
	v.QueueWait, v.RunTime = summarise(waits), summarise(runs)
	return v
}

// summarise returns the distribution of sorted, which may be empty.
func summarise(sorted []time.Duration) distribution {
	if len(sorted) == 0 {
		return distribution{}
	}
	d := distribution{
		P50: seconds(nearestRank(sorted, 50)),
		P90: seconds(nearestRank(sorted, 90)),
		P99: seconds(nearestRank(sorted, 99)),
		Max: seconds(sorted[len(sorted)-1]),
	}
	d.Chart = newChart(sorted, []chartMark{
		{"p50", time.Duration(d.P50)}, {"p90", time.Duration(d.P90)}, {"p99", time.Duration(d.P99)},
	})
	return d
}
