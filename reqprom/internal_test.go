package reqprom

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/reqpool/reqpool"
)

// TestLabelValues checks that the collector's arrays cover every Outcome
// and RefusalReason that reqpool names, so that a value added to reqpool
// fails here rather than going uncounted.
func TestLabelValues(t *testing.T) {
	for i := range nOutcomes {
		if s := reqpool.Outcome(i).String(); s == "unknown" {
			t.Errorf("Outcome(%d) has no name", i)
		}
	}
	if s := reqpool.Outcome(nOutcomes).String(); s != "unknown" {
		t.Errorf("Outcome(%d) is %q, which reqprom does not count", nOutcomes, s)
	}
	for i := range nReasons {
		if s := reqpool.RefusalReason(i).String(); s == "unknown" {
			t.Errorf("RefusalReason(%d) has no name", i)
		}
	}
	if s := reqpool.RefusalReason(nReasons).String(); s != "unknown" {
		t.Errorf("RefusalReason(%d) is %q, which reqprom does not count", nReasons, s)
	}
}

// TestUnknownClass: a class that the pool's Config does not name, which
// reqpool does not report, is counted under its own name, up to maxExtra
// of them; past those, its queries and refusals go uncounted.
func TestUnknownClass(t *testing.T) {
	p, err := reqpool.New(reqpool.Config{Classes: []reqpool.Class{{Name: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	c := NewCollector(p).(*collector)
	t0 := time.Now()
	done := func(class string) {
		c.QueryDone(context.Background(), reqpool.QueryRecord{Class: class, Admitted: t0, Started: t0, Finished: t0.Add(time.Millisecond)})
		c.Refused(context.Background(), reqpool.Refusal{Class: class, Reason: reqpool.RefusedQueueFull})
	}
	done("a")
	done("ghost")
	done("ghost")
	done("") // the first class for reqpool, but not a name: counted apart
	for i := range maxExtra {
		done(fmt.Sprint("extra-", i)) // the last two do not fit
	}

	// Series per class: 5 outcomes, 3 reasons, 2 histograms.
	const perClass = 10
	if n, want := testutil.CollectAndCount(c, "reqpool_queries_total", "reqpool_rejected_total",
		"reqpool_queue_wait_seconds", "reqpool_query_duration_seconds"), (1+maxExtra)*perClass; n != want {
		t.Errorf("%d series, want %d: class a and %d more", n, want, maxExtra)
	}
	if c.class("extra-15") != nil {
		t.Error("a class past maxExtra is counted")
	}
	for class, want := range map[string]uint64{"a": 1, "ghost": 2, "": 1, "extra-0": 1} {
		k := c.class(class)
		if got := k.cells[reqpool.OutcomeOK][bucket(0)][bucket(uint64(time.Millisecond))].Load(); got != want {
			t.Errorf("class %q: %d ok queries, want %d", class, got, want)
		}
		if got := k.reasons[reqpool.RefusedQueueFull].Load(); got != want {
			t.Errorf("class %q: %d refusals, want %d", class, got, want)
		}
	}
}
