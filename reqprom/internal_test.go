package reqprom

import (
	"testing"

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
