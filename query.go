package reqpool

import "context"

// Query is one unit of work for Fanout. Make one with Func. The zero Query is
// invalid: Fanout rejects it.
type Query struct {
	run func(ctx context.Context) error
}

// Func returns a Query that calls fn. fn receives a context that is done
// when the request ends, when another query of the same Fanout fails, or when
// the pool shuts down; it should return soon after. Pass that context to any
// Fanout that fn itself makes, so the nested queries can run in fn's slot.
func Func(fn func(ctx context.Context) error) Query { return Query{run: fn} }
