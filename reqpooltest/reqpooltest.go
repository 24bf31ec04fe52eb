// Package reqpooltest helps test handlers that call reqpool.Fanout,
// without a server, a full pool or a database that is down.
//
// A handler test as short as its errgroup version:
//
//	r := httptest.NewRequest("GET", "/orgs/7", nil)
//	r = r.WithContext(reqpooltest.Context(t))
//	handler(w, r)
//
// and its 503 path, with Fanout refusing as an overloaded pool would:
//
//	r = r.WithContext(reqpooltest.Refusing(t, reqpool.ErrQueueFull))
//
// The pools it makes tag no statement with the request id
// (Config.DisableSQLComment), so that a go-sqlmock expectation matches the
// statement as written; for a pool of your own, MatchIgnoringTag is a
// sqlmock QueryMatcherFunc that ignores the tag.
package reqpooltest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/internal/reqtest"
	"github.com/reqpool/reqpool/internal/testhook"
)

// Pool returns a pool of cfg, with DisableSQLComment set, shut down when
// the test ends; the test fails if that takes over 10 s (a query that
// ignores its context), or if New refuses cfg.
func Pool(t testing.TB, cfg reqpool.Config) *reqpool.Pool {
	t.Helper()
	cfg.DisableSQLComment = true
	return reqtest.NewPool(t, cfg)
}

// Context returns a context with a handle onto a pool of its own (Pool with
// the zero Config), released when the test ends: what Middleware gives a
// request. Give it to the handler under test with r.WithContext.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, release := Pool(t, reqpool.Config{}).NewContext(context.Background())
	t.Cleanup(release)
	return ctx
}

// Refusing returns a context with a handle on which every Fanout fails at
// once with err, running none of its queries: reqpool.ErrQueueFull or
// reqpool.ErrClosed as an overloaded or closed pool refuses,
// reqpool.ErrDBUnavailable as a database that is down fails, or any error
// of the test's. reqpool.WriteError answers the first three 503.
func Refusing(t testing.TB, err error) context.Context {
	t.Helper()
	if err == nil {
		t.Fatal("reqpooltest: Refusing with a nil error")
	}
	return testhook.Refusing(Pool(t, reqpool.Config{}), context.Background(), err)
}

// MatchIgnoringTag compares a statement with an expected one as
// go-sqlmock's QueryMatcherEqual does (equal once their runs of white space
// are made single spaces), after removing the request-id tag that
// reqpool's Select, Get and Exec append (" /*request_id='…'*/"). Use it as
// sqlmock.QueryMatcherOption(sqlmock.QueryMatcherFunc(reqpooltest.MatchIgnoringTag)).
func MatchIgnoringTag(expected, actual string) error {
	if e, a := squeeze(expected), squeeze(StripTag(actual)); e != a {
		return fmt.Errorf("reqpooltest: statement %q does not match %q", a, e)
	}
	return nil
}

// StripTag returns query without the request-id tag that reqpool appends.
func StripTag(query string) string {
	body := strings.TrimRight(query, " \t\r\n")
	semi := strings.HasSuffix(body, ";")
	body = strings.TrimSuffix(body, ";")
	if i := strings.LastIndex(body, " /*request_id='"); i >= 0 && strings.HasSuffix(body, "'*/") {
		body = body[:i]
		if semi {
			body += ";"
		}
		return body
	}
	return query
}

// squeeze trims s and makes each run of white space one space.
func squeeze(s string) string { return strings.Join(strings.Fields(s), " ") }
