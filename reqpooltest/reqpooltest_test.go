package reqpooltest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/goleak"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/reqpooltest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// orgPage is a handler in the README's style: two queries at once.
func orgPage(w http.ResponseWriter, r *http.Request) {
	var users, orders int
	err := reqpool.Fanout(r.Context(),
		reqpool.Func(func(context.Context) error { users = 3; return nil }),
		reqpool.Func(func(context.Context) error { orders = 5; return nil }),
	)
	if err != nil {
		reqpool.WriteError(w, r, err)
		return
	}
	fmt.Fprintf(w, "%d users, %d orders", users, orders)
}

// TestOrgPage is the package's example: a handler test as short as its
// errgroup version (one line of setup), and its 503 paths.
func TestOrgPage(t *testing.T) {
	w := httptest.NewRecorder()
	orgPage(w, httptest.NewRequest("GET", "/orgs/7", nil).WithContext(reqpooltest.Context(t)))
	if w.Code != http.StatusOK || w.Body.String() != "3 users, 5 orders" {
		t.Errorf("GET /orgs/7: %d %q", w.Code, w.Body)
	}

	for _, err := range []error{reqpool.ErrQueueFull, reqpool.ErrClosed, reqpool.ErrDBUnavailable} {
		w := httptest.NewRecorder()
		orgPage(w, httptest.NewRequest("GET", "/orgs/7", nil).WithContext(reqpooltest.Refusing(t, err)))
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Errorf("with Fanout failing with %v: %d, Retry-After %q; want 503 with Retry-After", err, w.Code, w.Header().Get("Retry-After"))
		}
	}
}

// TestRefusingRunsNothing: a refused Fanout runs none of its queries.
func TestRefusingRunsNothing(t *testing.T) {
	boom := errors.New("boom")
	ran := false
	err := reqpool.Fanout(reqpooltest.Refusing(t, boom), reqpool.Func(func(context.Context) error { ran = true; return nil }))
	if !errors.Is(err, boom) || ran {
		t.Errorf("Fanout = %v, ran %v; want boom, nothing run", err, ran)
	}
}

func TestMatchIgnoringTag(t *testing.T) {
	ctx := reqpooltest.Context(t)
	tagged := reqpool.TagSQL(ctx, "SELECT 1") // untagged: Context's pool disables the tag
	if tagged != "SELECT 1" {
		t.Errorf("TagSQL on reqpooltest.Context: %q, want the statement as written", tagged)
	}
	for _, tc := range []struct {
		expected, actual string
		match            bool
	}{
		{"SELECT id FROM users WHERE org_id = $1", "SELECT id FROM users WHERE org_id = $1 /*request_id='abc-1'*/", true},
		{"SELECT 1;", "SELECT 1 /*request_id='x%2Fy'*/;", true},
		{"SELECT  id\n FROM users", "SELECT id FROM users /*request_id='a'*/", true},
		{"SELECT 1", "SELECT 1", true},
		{"SELECT 1", "SELECT 2 /*request_id='a'*/", false},
		{"SELECT 1", "SELECT 1 /* other comment */", false},
	} {
		if err := reqpooltest.MatchIgnoringTag(tc.expected, tc.actual); (err == nil) != tc.match {
			t.Errorf("MatchIgnoringTag(%q, %q) = %v, want match %v", tc.expected, tc.actual, err, tc.match)
		}
	}
}
