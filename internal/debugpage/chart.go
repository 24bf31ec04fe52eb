package debugpage

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// The debug page's histograms put durations into buckets whose edges run
// 1µs, 2µs, 5µs, 10µs, … 500s: bucket 0 holds durations under 1µs, bucket b
// those in [bucketEdge(b-1), bucketEdge(b)), and bucket numEdges those of
// 500s and more. Each bucket is drawn as wide as the others, so the axis is
// close to logarithmic and its labels are round numbers.
const numEdges = 27

// bucketEdge returns edge i (0 <= i < numEdges): 1, 2 or 5 µs times 10^(i/3).
func bucketEdge(i int) time.Duration {
	d := time.Microsecond * time.Duration([3]int{1, 2, 5}[i%3])
	for range i / 3 {
		d *= 10
	}
	return d
}

// bucketOf returns the bucket of d: how many edges are no greater than d.
func bucketOf(d time.Duration) int {
	return sort.Search(numEdges, func(i int) bool { return d < bucketEdge(i) })
}

// bucketLow returns the lower edge of bucket b: 0 for bucket 0.
func bucketLow(b int) time.Duration {
	if b == 0 {
		return 0
	}
	return bucketEdge(b - 1)
}

// The chart's geometry, in SVG user units: the bars stand on the axis at
// chartAxis and rise to at most chartTop; the marks' labels sit above them,
// the ticks' below.
const (
	chartWidth, chartHeight = 480, 150
	chartLeft, chartRight   = 20, 460
	chartTop, chartAxis     = 40, 130
	chartMinBuckets         = 8 // so that one busy bucket does not fill the chart
	chartMaxTicks           = 7
)

// chart is a histogram of one distribution, ready for the page's inline
// SVG: a bar per bucket from the smallest sample's to the largest's (at
// least chartMinBuckets), labelled edges along the axis, and a line at each
// percentile. Coordinates are rounded to tenths.
type chart struct {
	Width, Height, Axis int // the geometry above, for the template
	Bars                []chartBar
	Ticks               []chartLabel
	Marks               []chartLabel
}

// chartBar is one bucket's bar; Title says its range and count.
type chartBar struct {
	X, Y, W, H float64
	Title      string
}

// chartLabel is a tick's label below the axis at X, or a mark's: a line at
// X from Top down to the axis, labelled above.
type chartLabel struct {
	X, Y   float64 // Y: the text's baseline
	Label  string
	TextX  float64 // where the text is anchored: at X for a tick, beside the line for a mark
	Anchor string  // SVG text-anchor: middle, start or end
	Top    float64 // a mark's line starts here
}

// chartMark is a value to mark on a chart.
type chartMark struct {
	label string
	at    time.Duration
}

// newChart draws sorted (ascending, not empty) with a mark at each of marks.
func newChart(sorted []time.Duration, marks []chartMark) chart {
	lo, hi := bucketOf(sorted[0]), bucketOf(sorted[len(sorted)-1])
	if n := hi - lo + 1; n < chartMinBuckets {
		lo = max(lo-(chartMinBuckets-n)/2, 0)
		hi = lo + chartMinBuckets - 1
	}
	counts := make([]int, hi-lo+1)
	most := 0
	for _, d := range sorted {
		b := bucketOf(d) - lo
		counts[b]++
		most = max(most, counts[b])
	}

	slot := float64(chartRight-chartLeft) / float64(len(counts)) // one bucket's width
	x := func(pos float64) float64 { return tenths(chartLeft + pos*slot) }
	c := chart{Width: chartWidth, Height: chartHeight, Axis: chartAxis}
	for i, n := range counts {
		if n == 0 {
			continue
		}
		h := float64(chartAxis-chartTop) * float64(n) / float64(most)
		c.Bars = append(c.Bars, chartBar{
			X: x(float64(i)) + 1, Y: tenths(chartAxis - h), W: tenths(slot - 2), H: tenths(h),
			Title: fmt.Sprintf("%s–%s: %d", roundDuration(bucketLow(lo+i)), roundDuration(bucketLow(lo+i+1)), n),
		})
	}
	step := (len(counts) + chartMaxTicks - 1) / chartMaxTicks
	for i := 0; i <= len(counts); i += step {
		at := x(float64(i))
		c.Ticks = append(c.Ticks, chartLabel{X: at, Y: chartHeight - 4, Label: roundDuration(bucketLow(lo + i)).String(),
			TextX: at, Anchor: "middle"})
	}
	for i, m := range marks {
		at := x(bucketPos(m.at) - float64(lo))
		y := float64(12 + 11*i) // stacked, so that close marks stay readable
		l := chartLabel{X: at, Y: y, Label: m.label, TextX: at + 3, Anchor: "start", Top: y - 9}
		if at > chartRight-30 { // no room on the right
			l.TextX, l.Anchor = at-3, "end"
		}
		c.Marks = append(c.Marks, l)
	}
	return c
}

// bucketPos returns where d falls on the bucket axis: its bucket b plus how
// far into it d lies, on a log scale (linearly in bucket 0, which starts at
// 0; at the start of the last, open-ended bucket).
func bucketPos(d time.Duration) float64 {
	b := bucketOf(d)
	switch {
	case b == 0:
		return float64(max(d, 0)) / float64(time.Microsecond)
	case b == numEdges:
		return float64(b)
	}
	lo, hi := float64(bucketLow(b)), float64(bucketLow(b+1))
	return float64(b) + math.Log(float64(d)/lo)/math.Log(hi/lo)
}

// tenths rounds v to one decimal, to keep the SVG short.
func tenths(v float64) float64 { return math.Round(v*10) / 10 }

// roundDuration rounds d to three significant digits, for display: 1.23ms,
// 45.7µs, 2.35s, 1m23s.
func roundDuration(d time.Duration) time.Duration {
	r := time.Duration(1)
	for d/r >= 1000 {
		r *= 10
	}
	return d.Round(r)
}
