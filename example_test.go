package reqpool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	// Alternatively, refuse new fan-outs as soon as the server starts
	// shutting down: srv.RegisterOnShutdown(func() { pool.Shutdown(ctx) }).

	ctx := context.Background() // in real code, one with a deadline
	err := errors.Join(srv.Shutdown(ctx), pool.Shutdown(ctx))
	fmt.Println(err)
	// Output: <nil>
}
