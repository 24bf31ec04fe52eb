package debugpage

import (
	"testing"
	"time"
)

func TestDebugChart(t *testing.T) {
	for d, want := range map[time.Duration]int{
		0: 0, 999: 0, time.Microsecond: 1, 1999: 1, 2 * time.Microsecond: 2, 5 * time.Microsecond: 3,
		10 * time.Microsecond: 4, time.Millisecond: 10, 499 * time.Second: numEdges - 1, 500 * time.Second: numEdges, time.Hour: numEdges,
	} {
		if got := bucketOf(d); got != want {
			t.Errorf("bucketOf(%v) = %d, want %d", d, got, want)
		}
	}
	prev := -1.0
	for d := time.Duration(0); d < time.Hour; d = d*5/4 + 1 {
		pos := bucketPos(d)
		if pos < prev || pos < float64(bucketOf(d)) || pos > float64(bucketOf(d)+1) {
			t.Fatalf("bucketPos(%v) = %v after %v: not monotonic, or outside bucket %d", d, pos, prev, bucketOf(d))
		}
		prev = pos
	}
	for d, want := range map[time.Duration]string{
		999: "999ns", 45678: "45.7µs", 1234567: "1.23ms", 2345678901: "2.35s", 83 * time.Second: "1m23s",
	} {
		if got := roundDuration(d).String(); got != want {
			t.Errorf("roundDuration(%v) = %s, want %s", time.Duration(d), got, want)
		}
	}

	// One value: a chart of chartMinBuckets buckets, one bar, everything
	// inside the plot.
	c := newChart([]time.Duration{3 * time.Millisecond, 3 * time.Millisecond}, []chartMark{{"p50", 3 * time.Millisecond}})
	if len(c.Bars) != 1 || c.Bars[0].Title != "2ms–5ms: 2" || len(c.Ticks) < 2 || len(c.Marks) != 1 {
		t.Fatalf("chart %+v", c)
	}
	for _, l := range append(c.Ticks, c.Marks...) {
		if l.X < chartLeft || l.X > chartRight {
			t.Errorf("label %+v outside the plot", l)
		}
	}
	if b := c.Bars[0]; b.X < chartLeft || b.X+b.W > chartRight || b.Y != chartTop || b.Y+b.H != chartAxis {
		t.Errorf("bar %+v: want the full height, inside the plot", b)
	}
	if m := c.Marks[0]; m.X < c.Bars[0].X || m.X > c.Bars[0].X+c.Bars[0].W {
		t.Errorf("the mark at %v is not on the bar of its value, %+v", m.X, c.Bars[0])
	}
}
