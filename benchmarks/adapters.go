package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/alitto/pond/v2"
	"github.com/panjf2000/ants/v2"
	"github.com/reqpool/reqpool"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// Task is one simulated query: it runs until done or until ctx is done.
type Task = func(ctx context.Context) error

// Contender is one way of running a request's parallel tasks, wrapped so that
// every scenario drives every library the same way. Each implementation does
// what a competent user of that library would write in a handler; adapterDocs
// describes them for BENCHMARKS.md.
type Contender interface {
	// Name is the contender's short name in tables and charts.
	Name() string

	// Wrap installs whatever per-request state the library needs in an HTTP
	// server: reqpool's Middleware; the identity for the others.
	Wrap(next http.Handler) http.Handler

	// Request returns a context standing for one request outside HTTP (a
	// benchmark goroutine, a memory-test caller), and the function that ends
	// it: reqpool's Pool.NewContext; ctx itself and a no-op for the others.
	Request(ctx context.Context) (context.Context, func())

	// Fanout runs tasks in parallel and waits for all of them. Each task gets
	// a context that ends with ctx (and, where the library offers it, with the
	// first failure). A rejection by a bounded queue wraps
	// reqpool.ErrQueueFull, so that reqpool.WriteError answers 503.
	Fanout(ctx context.Context, tasks []Task) error

	// Close stops the contender's pool and waits for its goroutines to exit.
	Close()
}

// PoolConfig is what every contender is built with. Each library gets the
// same bound on executing tasks; only reqpool has a bounded queue, since the
// peers' queues are unbounded by default and bound, where they can, per task
// rather than per request (a Fanout would be half admitted).
type PoolConfig struct {
	Workers   int // tasks executing at once, process-wide (errgroup: ignored; see errgroupContender)
	QueueSize int // reqpool's Config.QueueSize; 0 means its default
	MaxFanout int // reqpool's Config.MaxFanout; 0 means its default
}

// Factory builds one contender.
type Factory struct {
	Name string
	New  func(PoolConfig) (Contender, error)
}

// contenders lists every contender in the order tables show them: reqpool,
// then the two hand-written baselines, then the pool libraries.
var contenders = []Factory{
	{"reqpool", newReqpool},
	{"errgroup", newErrgroup},
	{"semaphore", newSemaphore},
	{"pond", newPond},
	{"ants", newAnts},
}

// contenderNames returns the names of fs in order.
func contenderNames(fs []Factory) []string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.Name
	}
	return names
}

// adapterDocs says, for BENCHMARKS.md, what each adapter does.
var adapterDocs = []struct{ Name, Doc string }{
	{"reqpool", "`reqpool.New(Config{Workers, QueueSize, MaxFanout})` once; `reqpool.Middleware(pool)` around the handler; " +
		"`reqpool.Fanout(r.Context(), reqpool.Func(task)...)` per request (outside HTTP, `pool.NewContext`). Bounded queue: " +
		"a Fanout that does not fit is refused whole with `ErrQueueFull`, answered 503 by `reqpool.WriteError`."},
	{"errgroup", "One `errgroup.WithContext(r.Context())` per request with `SetLimit(min(32, n))`, each task `g.Go(func() error { return task(gctx) })`: " +
		"the usual \"pool per request\". No process-wide bound: in the HTTP scenarios the only global bound is the simulated " +
		"database's `SetMaxOpenConns(Workers)`, whose waiters `database/sql` serves in random order."},
	{"semaphore", "A global `semaphore.Weighted(Workers)`; per request an `errgroup.WithContext`, and each task is " +
		"`g.Go(func() error { sem.Acquire(gctx, 1); defer sem.Release(1); return task(gctx) })`. FIFO waiters; an Acquire " +
		"whose context is done fails, so a cancelled request starts nothing more."},
	{"pond", "A global `pond.NewPool(Workers)` (default unbounded queue); per request `pool.NewGroupContext(r.Context())`, " +
		"tasks submitted with `group.SubmitErr(func() error { return task(group.Context()) })`, then `group.Wait()`. FIFO queue; " +
		"the group skips its queued tasks once its context is done."},
	{"ants", "A global `ants.NewPool(Workers)` (blocking `Submit`, unlimited blocked submitters). ants has no context, so per " +
		"request the handler derives a cancellable context, submits each task with `pool.Submit(func() { ...task(ctx)... })`, " +
		"cancels the others on the first error, stops submitting once the context is done, and waits on a `sync.WaitGroup`. " +
		"The handler itself blocks in `Submit` while every worker is busy."},
}

// ---- reqpool ----

// reqpoolContender is reqpool used as its documentation says.
type reqpoolContender struct {
	pool *reqpool.Pool
	mw   func(http.Handler) http.Handler
}

func newReqpool(cfg PoolConfig) (Contender, error) {
	return newReqpoolWith(reqpool.Config{Workers: cfg.Workers, QueueSize: cfg.QueueSize, MaxFanout: cfg.MaxFanout})
}

// newReqpoolWith is the reqpool contender built from a whole Config: the
// scenarios of classes and flows (10, 11) set what PoolConfig has no field
// for, since no peer has an equivalent.
func newReqpoolWith(cfg reqpool.Config) (Contender, error) {
	p, err := reqpool.New(cfg)
	if err != nil {
		return nil, err
	}
	return &reqpoolContender{pool: p, mw: reqpool.Middleware(p)}, nil
}

func (c *reqpoolContender) Name() string                        { return "reqpool" }
func (c *reqpoolContender) Wrap(next http.Handler) http.Handler { return c.mw(next) }

func (c *reqpoolContender) Request(ctx context.Context) (context.Context, func()) {
	ctx, release := c.pool.NewContext(ctx)
	return ctx, release
}

// Fanout converts the tasks to queries, as a handler would build its
// reqpool.Func list, so the slice allocation counts as it does in real use.
func (c *reqpoolContender) Fanout(ctx context.Context, tasks []Task) error {
	qs := make([]reqpool.Query, len(tasks))
	for i, t := range tasks {
		qs[i] = reqpool.Func(t)
	}
	return reqpool.Fanout(ctx, qs...)
}

func (c *reqpoolContender) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.pool.Shutdown(ctx)
}

// ---- errgroup ----

// errgroupContender is an errgroup per request: the answer with no
// process-wide bound, limited only per request.
type errgroupContender struct{}

func newErrgroup(PoolConfig) (Contender, error) { return errgroupContender{}, nil }

// errgroupLimit is the per-request limit a typical handler sets.
const errgroupLimit = 32

func (errgroupContender) Name() string                        { return "errgroup" }
func (errgroupContender) Wrap(next http.Handler) http.Handler { return next }
func (errgroupContender) Request(ctx context.Context) (context.Context, func()) {
	return ctx, func() {}
}
func (errgroupContender) Close() {}

func (errgroupContender) Fanout(ctx context.Context, tasks []Task) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(min(errgroupLimit, len(tasks)))
	for _, t := range tasks {
		g.Go(func() error { return t(gctx) })
	}
	return g.Wait()
}

// ---- semaphore ----

// semaphoreContender is the careful hand-written answer: a process-wide
// semaphore, an errgroup per request.
type semaphoreContender struct{ sem *semaphore.Weighted }

func newSemaphore(cfg PoolConfig) (Contender, error) {
	return &semaphoreContender{sem: semaphore.NewWeighted(int64(cfg.Workers))}, nil
}

func (c *semaphoreContender) Name() string                        { return "semaphore" }
func (c *semaphoreContender) Wrap(next http.Handler) http.Handler { return next }
func (c *semaphoreContender) Request(ctx context.Context) (context.Context, func()) {
	return ctx, func() {}
}
func (c *semaphoreContender) Close() {}

func (c *semaphoreContender) Fanout(ctx context.Context, tasks []Task) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, t := range tasks {
		g.Go(func() error {
			if err := c.sem.Acquire(gctx, 1); err != nil {
				return err
			}
			defer c.sem.Release(1)
			return t(gctx)
		})
	}
	return g.Wait()
}

// ---- pond ----

// pondContender is a global pond pool with a task group per request.
type pondContender struct{ pool pond.Pool }

func newPond(cfg PoolConfig) (Contender, error) {
	return &pondContender{pool: pond.NewPool(cfg.Workers)}, nil
}

func (c *pondContender) Name() string                                          { return "pond" }
func (c *pondContender) Wrap(next http.Handler) http.Handler                   { return next }
func (c *pondContender) Request(ctx context.Context) (context.Context, func()) { return ctx, func() {} }
func (c *pondContender) Close()                                                { c.pool.StopAndWait() }

func (c *pondContender) Fanout(ctx context.Context, tasks []Task) error {
	g := c.pool.NewGroupContext(ctx)
	gctx := g.Context() // done when ctx is, or when a task of the group fails
	for _, t := range tasks {
		g.SubmitErr(func() error { return t(gctx) })
	}
	return g.Wait()
}

// ---- ants ----

// antsContender is a global ants pool. ants knows nothing of contexts, so
// the adapter carries the request's context to the tasks and does the
// cancel-on-first-error bookkeeping that errgroup and pond do themselves.
type antsContender struct{ pool *ants.Pool }

func newAnts(cfg PoolConfig) (Contender, error) {
	p, err := ants.NewPool(cfg.Workers)
	if err != nil {
		return nil, err
	}
	return &antsContender{pool: p}, nil
}

func (c *antsContender) Name() string                                          { return "ants" }
func (c *antsContender) Wrap(next http.Handler) http.Handler                   { return next }
func (c *antsContender) Request(ctx context.Context) (context.Context, func()) { return ctx, func() {} }

// Close waits for ants's workers and its purge goroutines to exit, so that a
// goroutine-leak check after it passes.
func (c *antsContender) Close() { _ = c.pool.ReleaseTimeout(10 * time.Second) }

func (c *antsContender) Fanout(ctx context.Context, tasks []Task) error {
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	fail := func(err error) {
		once.Do(func() { first = err; cancel(err) })
	}
	for _, t := range tasks {
		if tctx.Err() != nil {
			break // the request is gone or a task failed: submit nothing more
		}
		wg.Add(1)
		err := c.pool.Submit(func() {
			defer wg.Done()
			if err := t(tctx); err != nil {
				fail(err)
			}
		})
		if err != nil {
			wg.Done()
			fail(fmt.Errorf("ants: %w", err))
			break
		}
	}
	wg.Wait()
	if first != nil {
		if errors.Is(first, ants.ErrPoolOverload) {
			return fmt.Errorf("%w: %w", reqpool.ErrQueueFull, first)
		}
		return first
	}
	return ctx.Err()
}
