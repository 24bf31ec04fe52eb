package pgtest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/reqpool/reqpool"
)

// Results checks every value that concurrent Fanouts read through a real
// HTTP server: callers clients each send requests for a Fanout of 4
// parameterised statements, SELECT $1::bigint * 1000 + C with C different
// in each, and check the 4 values. Behind PgBouncer in transaction mode, a
// driver that splits a statement over two round trips reads other
// statements' results here. Zero wrong answers and zero errors pass.
func Results(t *testing.T, open Opener, dsn string, callers, requests int) {
	p := NewPool(t, reqpool.Config{Workers: 8})
	db := Open(t, open, dsn, p)
	url, c := Serve(t, p, func(w http.ResponseWriter, r *http.Request) {
		x, err := strconv.ParseInt(r.URL.Query().Get("x"), 10, 64)
		if err != nil {
			http.Error(w, "bad x", http.StatusBadRequest)
			return
		}
		var v [4]int64
		qs := make([]reqpool.Query, len(v))
		for i := range v {
			qs[i] = reqpool.Get(db, &v[i], fmt.Sprintf("SELECT $1::bigint * 1000 + %d", i), x)
		}
		if err := reqpool.Fanout(r.Context(), qs...); err != nil {
			t.Logf("x=%d: %v", x, err)
			reqpool.WriteError(w, r, err)
			return
		}
		fmt.Fprintf(w, "%d %d %d %d", v[0], v[1], v[2], v[3])
	})

	var next, wrong, failed atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				x := next.Add(1)
				if x > int64(requests) {
					return
				}
				status, body, err := get(context.Background(), c, fmt.Sprintf("%s?x=%d", url, x), fmt.Sprintf("results-%d", x))
				if err != nil || status != http.StatusOK {
					failed.Add(1)
					continue
				}
				want := fmt.Sprintf("%d %d %d %d", x*1000, x*1000+1, x*1000+2, x*1000+3)
				if strings.TrimSpace(body) != want {
					if wrong.Add(1) <= 3 {
						t.Errorf("x=%d: got %q, want %q", x, body, want)
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d requests of a Fanout of 4 from %d callers: %d wrong, %d failed", requests, callers, wrong.Load(), failed.Load())
	if wrong.Load() != 0 || failed.Load() != 0 {
		t.Errorf("%d wrong results and %d failed requests of %d, want 0 and 0", wrong.Load(), failed.Load(), requests)
	}
}
