package reqpool_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/reqpool/reqpool"
)

// A job outside HTTP gets its handle from NewContext.
func ExampleFanout() {
	pool, err := reqpool.New(reqpool.Config{Workers: 4})
	if err != nil {
		panic(err)
	}
	defer pool.Shutdown(context.Background())

	ctx, release := pool.NewContext(context.Background())
	defer release()

	var users, openOrders int
	err = reqpool.Fanout(ctx,
		reqpool.Func(func(ctx context.Context) error { users = 3; return nil }),
		reqpool.Func(func(ctx context.Context) error { openOrders = 7; return nil }),
	)
	fmt.Println(users, openOrders, err)
	// Output: 3 7 <nil>
}

// Wrap the handlers that fan out; inside, call Fanout with r.Context().
func ExampleMiddleware() {
	pool, err := reqpool.New(reqpool.Config{})
	if err != nil {
		panic(err)
	}
	defer pool.Shutdown(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) {
		var users, orders int
		err := reqpool.Fanout(r.Context(),
			reqpool.Func(func(ctx context.Context) error { users = 3; return nil }),
			reqpool.Func(func(ctx context.Context) error { orders = 7; return nil }),
		)
		if err != nil {
			reqpool.WriteError(w, r, err)
			return
		}
		fmt.Fprintf(w, "users=%d orders=%d", users, orders)
	})
	srv := httptest.NewServer(reqpool.Middleware(pool)(mux))
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL+"/dashboard", nil)
	req.Header.Set("X-Request-ID", "req-42")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, resp.Header.Get("X-Request-ID"), string(body))
	http.DefaultClient.CloseIdleConnections()
	// Output: 200 req-42 users=3 orders=7
}

// The first failure cancels the other queries; errors.As finds which query
// failed and errors.Is what it returned.
func ExampleQueryError() {
	pool, _ := reqpool.New(reqpool.Config{})
	defer pool.Shutdown(context.Background())
	ctx, release := pool.NewContext(context.Background())
	defer release()

	errNotFound := errors.New("not found")
	err := reqpool.Fanout(ctx,
		reqpool.Func(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }),
		reqpool.Func(func(ctx context.Context) error { return errNotFound }),
	)
	var qe *reqpool.QueryError
	fmt.Println(errors.As(err, &qe), qe.Index, errors.Is(err, errNotFound))
	// Output: true 1 true
}

// Shut the server down first, so that handlers stop fanning out, then the
// pool, which waits for the queries still admitted.
func ExamplePool_Shutdown() {
	pool, _ := reqpool.New(reqpool.Config{})
	srv := &http.Server{Addr: "127.0.0.1:0", Handler: reqpool.Middleware(pool)(http.NotFoundHandler())}
	// In this order: the pool's Shutdown first, or from
	// srv.RegisterOnShutdown, would fail the Fanouts of requests that the
	// server is still serving.

	ctx := context.Background() // in real code, one with a deadline
	err := errors.Join(srv.Shutdown(ctx), pool.Shutdown(ctx))
	fmt.Println(err)
	// Output: <nil>
}

// Interactive pages and batch exports share one pool: interactive requests
// get 4 workers to batch's 1 while both have work, and their own queue, so
// a batch flood is refused in its class and never shuts pages out. Inside
// batch, each tenant's requests form one flow: a tenant with many exports
// running gets no more of the class than a tenant with one.
func ExampleConfig_classes() {
	pool, err := reqpool.New(reqpool.Config{
		Workers: 8,
		Classes: []reqpool.Class{
			{Name: "interactive", Share: 4},
			{Name: "batch", Share: 1, QueueSize: 64},
		},
		Classify: func(r *http.Request) (class, flow string) {
			if r.URL.Path == "/export" {
				return "batch", r.Header.Get("X-Tenant")
			}
			return "interactive", "" // flowless: fewest remaining first among themselves
		},
	})
	if err != nil {
		panic(err)
	}
	defer pool.Shutdown(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		err := reqpool.Fanout(r.Context(), reqpool.Func(func(ctx context.Context) error { return nil }))
		reqpool.WriteError(w, r, err) // nil: writes nothing, and net/http answers 200
	})
	srv := httptest.NewServer(reqpool.Middleware(pool)(mux))
	defer srv.Close()

	for _, path := range []string{"/dashboard", "/export"} {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("X-Tenant", "acme")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
	}
	for _, c := range pool.Stats().Classes {
		fmt.Printf("%s: %d completed\n", c.Name, c.Completed)
	}

	// A job outside HTTP chooses its class and flow itself.
	ctx, release, err := pool.NewClassContext(context.Background(), "batch", "acme")
	if err != nil {
		panic(err)
	}
	defer release()
	fmt.Println(reqpool.Fanout(ctx, reqpool.Func(func(ctx context.Context) error { return nil })))
	// Output:
	// interactive: 1 completed
	// batch: 1 completed
	// <nil>
}

// A query that finds no row is an answer, not a failure: with Optional its
// Fanout goes on, and its siblings are not cancelled.
func ExampleQuery_Optional() {
	pool, err := reqpool.New(reqpool.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Shutdown(context.Background())
	ctx, release := pool.NewContext(context.Background())
	defer release()

	var found, siblingDone bool
	err = reqpool.Fanout(ctx,
		// reqpool.Get(db, &org, "SELECT ... WHERE id = $1", id).Optional(&found)
		reqpool.Func(func(context.Context) error { return sql.ErrNoRows }).Optional(&found),
		reqpool.Func(func(context.Context) error { siblingDone = true; return nil }),
	)
	fmt.Println(err, found, siblingDone)
	// Output: <nil> false true
}
