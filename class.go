package reqpool

import (
	"context"
	"fmt"
	"math"

	"github.com/reqpool/reqpool/internal/sched"
)

// Class is a priority class of a Pool (Config.Classes). Its requests wait
// in a queue of their own and, while other classes have work too, get
// workers in proportion to Share. Inside a class, requests are grouped
// into flows (see Config.Classify), which share the class's workers
// equally.
type Class struct {
	// Name is how Config.Classify and Pool.NewClassContext name the class,
	// and the class label of Stats, Pool.DebugHandler and reqprom. Names are
	// unique and not empty.
	Name string

	// Share is the class's relative share of the workers while classes
	// compete: a worker that frees up goes to the class with queries waiting
	// that has the fewest executing for its share (executing/Share), so
	// that each gets about Workers × Share / (the sum of the waiting
	// classes' shares). A class alone may use every worker, and an
	// executing query is never preempted. 0 means DefaultShare (1); at most
	// MaxShare.
	Share int

	// QueueSize is the most queries of this class that wait at once. A
	// Fanout of the class that does not fit into the free workers and this
	// queue fails with ErrQueueFull, however full or empty the other
	// classes' queues are; one of more than Workers+QueueSize queries, which
	// never could, fails with ErrTooManyQueries. 0 means Config.QueueSize.
	QueueSize int
}

// Class shares: the default, and the largest accepted.
const (
	DefaultShare = 1
	MaxShare     = 1 << 20
)

// classes returns the pool's classes after defaults: Classes, or one class
// named "" without them. c has been through withDefaults.
func (c Config) classes() []Class {
	if len(c.Classes) == 0 {
		return []Class{{Share: DefaultShare, QueueSize: c.QueueSize}}
	}
	return c.Classes
}

// schedConfig returns the configuration of the pool's scheduler. c has
// been through withDefaults.
func (c Config) schedConfig() sched.Config {
	sc := sched.Config{Workers: c.Workers, PerRequest: c.PerRequest, Panicked: func(v any) error { return newPanicError(v) },
		Failed: func(i int, err, cause error) error { return &QueryError{Index: i, Err: err, ctx: cause} }}
	if c.Adaptive {
		sc.AdaptiveFloor = AdaptiveFloor
	}
	for _, k := range c.classes() {
		sc.Classes = append(sc.Classes, sched.ClassConfig{Name: k.Name, Share: k.Share, QueueSize: k.QueueSize,
			MaxFanout: min(c.MaxFanout, c.Workers+k.QueueSize)})
	}
	return sc
}

// classesWithDefaults validates c.Classes and returns a copy with their
// zero fields filled in; c.QueueSize has its default already.
func (c Config) classesWithDefaults() ([]Class, error) {
	if len(c.Classes) == 0 {
		return nil, nil
	}
	out := make([]Class, len(c.Classes))
	seen := make(map[string]bool, len(c.Classes))
	total := int64(c.Workers)
	for i, k := range c.Classes {
		switch {
		case k.Name == "":
			return nil, fmt.Errorf("%w: Classes[%d] has no Name", ErrInvalidConfig, i)
		case seen[k.Name]:
			return nil, fmt.Errorf("%w: two classes named %q", ErrInvalidConfig, k.Name)
		case k.Share < 0 || k.Share > MaxShare:
			return nil, fmt.Errorf("%w: class %q has Share %d, want 0 to %d", ErrInvalidConfig, k.Name, k.Share, MaxShare)
		case k.QueueSize < 0:
			return nil, fmt.Errorf("%w: class %q has QueueSize %d, want >= 0", ErrInvalidConfig, k.Name, k.QueueSize)
		}
		seen[k.Name] = true
		if k.Share == 0 {
			k.Share = DefaultShare
		}
		if k.QueueSize == 0 {
			k.QueueSize = c.QueueSize
		}
		if total += int64(k.QueueSize); total > math.MaxInt32 {
			return nil, fmt.Errorf("%w: Workers plus the classes' queue sizes is above %d", ErrInvalidConfig, math.MaxInt32)
		}
		out[i] = k
	}
	return out, nil
}

// largestQueue returns the largest queue bound of the pool's classes. c
// has been through withDefaults.
func (c Config) largestQueue() int {
	q := 0
	for _, k := range c.classes() {
		q = max(q, k.QueueSize)
	}
	return q
}

// class returns the pool's class named name ("" names the first), or an
// error wrapping ErrUnknownClass.
func (p *Pool) class(name string) (*sched.Class, error) {
	if c := p.sched.Class(name); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownClass, name)
}

// route puts h's request in class and flow. An unknown class is kept as
// h.err, which the handle's Fanout calls return.
func (h *Handle) route(class, flow string) {
	c, err := h.pool.class(class)
	if err != nil {
		h.err = err
		return
	}
	h.member.Class, h.member.Flow = c, flow
}

// NewClassContext is NewContext for a request of the class and flow given,
// as Config.Classify gives them to Middleware's requests: a class of ""
// is the first class, and a flow of "" leaves the request flowless (see
// Config.Classify). Its release blocks, as NewContext's does. It fails,
// returning a nil context and release, with an error wrapping
// ErrUnknownClass when the pool has no such class.
func (p *Pool) NewClassContext(parent context.Context, class, flow string) (ctx context.Context, release func(), err error) {
	c, err := p.class(class)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := p.newContext(parent, newRequestID())
	h, _ := FromContext(ctx)
	h.member.Class, h.member.Flow = c, flow
	return ctx, cancel, nil
}

// ClassStats is a snapshot of one class of a pool (see Stats).
type ClassStats struct {
	Name    string // Class.Name; "" for the one class of a pool without Classes
	Running int    // its queries executing now in slots of their own
	Queued  int    // its queries admitted and waiting to start
	Flows   int    // its named flows with a registered request or a query executing

	// Cumulative counters, as Stats' are.
	Submitted, Completed, Failed, Cancelled, Dropped, Rejected uint64
}
