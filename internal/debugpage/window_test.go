package debugpage

import (
	"slices"
	"testing"
	"time"
)

func TestDebugWindow(t *testing.T) {
	var w Window
	if waits, runs, since := w.read(); waits != nil || runs != nil || !since.IsZero() {
		t.Errorf("an empty window read %v %v %v", waits, runs, since)
	}
	t0 := time.Now()
	const n = windowSize + 952
	for i := range n {
		// Query i is admitted at t0 + i s, waits n-i ms and runs i µs.
		wait, run := time.Duration(n-i)*time.Millisecond, time.Duration(i)*time.Microsecond
		w.Add(wait, run, t0.Add(time.Duration(i)*time.Second+wait+run))
	}
	waits, runs, since := w.read()
	if len(waits) != windowSize || len(runs) != windowSize {
		t.Fatalf("kept %d and %d samples, want %d", len(waits), len(runs), windowSize)
	}
	// The latest windowSize queries are i = 952 … n-1: waits of 1 … 2048 ms,
	// run times of 952 … n-1 µs.
	if !slices.IsSorted(waits) || waits[0] != time.Millisecond || waits[windowSize-1] != windowSize*time.Millisecond {
		t.Errorf("waits from %v to %v", waits[0], waits[windowSize-1])
	}
	if !slices.IsSorted(runs) || runs[0] != 952*time.Microsecond || runs[windowSize-1] != (n-1)*time.Microsecond {
		t.Errorf("runs from %v to %v", runs[0], runs[windowSize-1])
	}
	if want := t0.Add(952*time.Second + windowSize*time.Millisecond + 952*time.Microsecond); !since.Equal(want) {
		t.Errorf("since %v, want %v", since, want)
	}

	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, time.Duration(i))
	}
	for _, c := range []struct {
		sorted []time.Duration
		p      int
		want   time.Duration
	}{
		{nil, 50, 0}, {hundred[:1], 50, 1}, {hundred[:1], 99, 1},
		{hundred, 50, 50}, {hundred, 90, 90}, {hundred, 99, 99}, {hundred, 100, 100},
		{hundred[:10], 50, 5}, {hundred[:10], 99, 10}, {hundred[:3], 50, 2},
	} {
		if got := nearestRank(c.sorted, c.p); got != c.want {
			t.Errorf("nearestRank(%d samples, %d) = %v, want %v", len(c.sorted), c.p, got, c.want)
		}
	}
}
