// Package testhook is how package reqpooltest reaches what package reqpool
// keeps unexported. reqpool sets each hook once, in an init function; no
// other package may set them.
package testhook

import "context"

// Refusing returns a context derived from parent carrying a handle onto
// pool (a *reqpool.Pool) whose every Fanout fails at once with err,
// running nothing.
var Refusing func(pool any, parent context.Context, err error) context.Context
