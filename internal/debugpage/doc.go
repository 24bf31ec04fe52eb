// Package debugpage renders reqpool's live debug page, the one behind
// Pool.DebugHandler, as HTML or as JSON: from a Snapshot of the pool, which
// its Source takes at each view, and from the queries that ran, which its
// owner adds to its Window.
//
// Rendering the page is its one concern. Who may see the page, what a
// Snapshot holds and which queries reach the Window are for the root
// package to decide; so that it stays so, this package imports neither the
// root package (which imports it) nor any other of the project's packages,
// and knows none of their types. It is internal, and apart, so that the
// root package's files show its public API.
package debugpage
