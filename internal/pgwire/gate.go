package pgwire

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// ErrUnavailable is wrapped in the error of every connection attempt that
// failed, and of every attempt a Gate refused because one failed less than
// RetryInterval ago. The root package exports it as ErrDBUnavailable.
var ErrUnavailable = errors.New("reqpool: database unavailable")

// RetryInterval is the least time between two connection attempts while the
// database refuses them: at most 1/RetryInterval attempts a second per
// Gate, and a recovered database is back in use within about this long.
const RetryInterval = 250 * time.Millisecond

// Gate is a driver.Connector that makes at most one connection attempt per
// RetryInterval while attempts fail, and fails the others at once with an
// error wrapping ErrUnavailable and the last failure. A refusal for lack of
// connection slots while connections work is a shortage, not a failure: the
// gate stays open and caps the pool instead (see shortage.go).
//
// Without it, every query that needs a connection dials: 16 callers on a
// stopped database dialled about 16,000 times a second, and over TCP a dial
// to a local port with no listener can connect to itself and hold the port
// the database wants back. A healthy database never meets the gate: it only
// closes after a failure, and the first success opens it again.
//
// The openers also run the cancels of their connections through the gate
// (NewCanceller, Go, Hold), which bounds the CancelRequests in flight, and so
// that Close, which database/sql calls from
// DB.Close, returns only once none of them is in flight, those started while
// it waits included: PgBouncer before 1.19 exits when a client disconnects
// while its CancelRequest is being passed on (pgbouncer#801), as the client
// of a process that exits right after DB.Close would. Work started after
// Close has returned is not waited for.
type Gate struct {
	driver.Connector
	now func() time.Time // time.Now; a field so that tests can step time

	mu       sync.Mutex // protects the fields below
	failed   time.Time  // when the last attempt failed; zero while healthy
	lastErr  error      // that attempt's error
	probing  bool       // an attempt is under way after a failure
	orphans  []*attempt // attempts whose caller left, for the next Connect (maxOrphans)
	closed   bool       // Close has been called: no more orphans
	inFlight int        // cancels, chases and connection attempts under way (Go, Hold)
	idle     sync.Cond  // on mu: broadcast when inFlight drops to 0

	// A shortage (see shortage.go): live counts the gate's connections
	// established and open; limit is what they can run at once while the
	// server refuses more for lack of slots, and 0 otherwise; probe is the
	// next probe for more, or nil.
	live     int
	draining int // of live, the connections closed by their driver while their statement runs (Socket.Close)
	limit    int
	probe    *time.Timer
	enough   int             // the limit at which a shortage is over (OnLimit)
	setLimit func(limit int) // told of limit's changes (OnLimit); nil: no shortage handling
	closing  bool            // Close has begun: no more probes
	notifyMu sync.Mutex      // orders the calls of setLimit (notifyLimit); taken before mu, never inside it

	cancelSlots chan struct{} // a CancelRequest on its way holds one; MaxCancelsInFlight
	cancels     cancelCounts
	signaller   signaller
}

// NewGate returns a Gate around c.
func NewGate(c driver.Connector) *Gate {
	g := &Gate{Connector: c, now: time.Now, cancelSlots: make(chan struct{}, MaxCancelsInFlight)}
	g.idle.L = &g.mu
	return g
}

// Hold counts one cancel of the gate's connections as under way until the
// returned function is called (once; later calls do nothing).
func (g *Gate) Hold() (release func()) {
	g.mu.Lock()
	g.inFlight++
	g.mu.Unlock()
	var once sync.Once
	return func() { once.Do(g.leave) }
}

// leave counts one piece of work that Hold (or another caller holding mu)
// counted in inFlight as done.
func (g *Gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.leaveLocked()
}

// leaveLocked is leave for a caller that holds mu.
func (g *Gate) leaveLocked() {
	if g.inFlight--; g.inFlight == 0 {
		g.idle.Broadcast()
	}
}

// Go runs f, a cancel or a chase of one of the gate's connections, on a
// goroutine that Close waits for.
func (g *Gate) Go(f func()) {
	release := g.Hold()
	go func() {
		defer release()
		f()
	}()
}

// Close waits until no cancel or chase started through the gate is under
// way, each being bounded by a Canceller's timing, then closes the wrapped
// connector if it has a Close. It implements io.Closer, which DB.Close
// calls.
func (g *Gate) Close() error {
	g.mu.Lock()
	g.closing = true
	if g.probe != nil && g.probe.Stop() { // due, not started: its inFlight is ours to give back
		g.probe = nil
		g.leaveLocked()
	}
	for g.inFlight > 0 {
		g.idle.Wait()
	}
	orphans := g.orphans
	g.orphans, g.closed = nil, true
	shortage := g.limit > 0
	g.limit = 0
	g.mu.Unlock()
	if shortage {
		g.notifyLimit() // the pool's cap goes with the gate's connections
	}
	for _, att := range orphans {
		<-att.done // Go's attempts are done: inFlight was 0
		if att.err == nil {
			att.c.Close()
		}
	}
	g.closeSignaller()
	if c, ok := g.Connector.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Connect implements driver.Connector. A healthy gate lets every caller
// connect; after a failure it lets one attempt through per RetryInterval
// and refuses the others at once.
//
// Every attempt runs to its end, bounded by the driver's connect timeout,
// even if its caller gives up; the next caller adopts it (or the
// connection it made) before a new attempt starts. A connection costs the
// server a process, and an attempt cut short wastes it: in a storm of
// hang-ups while a pool fills, pgx (whose connect honours the context)
// kept starting connections and cutting them short, and its pool never
// filled; and an attempt left to run with no one to adopt it would let
// database/sql, which counts only the attempts it waits for, start new
// ones without bound ("too many clients"). And in a Fanout, the siblings
// refused at once fail the group and cancel the prober's context: a probe
// that ended with its caller would never learn that the database is back.
func (g *Gate) Connect(ctx context.Context) (driver.Conn, error) {
	g.mu.Lock()
	var att *attempt
	if n := len(g.orphans); n > 0 {
		att = g.orphans[n-1]
		g.orphans = g.orphans[:n-1]
		g.mu.Unlock()
	} else {
		probe := !g.failed.IsZero()
		if probe {
			if g.probing || g.now().Sub(g.failed) < RetryInterval {
				err := &unavailableError{last: g.lastErr, since: g.now().Sub(g.failed)}
				g.mu.Unlock()
				return nil, err
			}
			g.probing = true
		}
		g.mu.Unlock()
		att = &attempt{done: make(chan struct{})}
		g.Go(func() {
			c, err := g.Connector.Connect(context.WithoutCancel(ctx))
			if probe {
				g.mu.Lock()
				g.probing = false
				g.mu.Unlock()
			}
			g.record(err)
			att.c, att.err = c, err
			close(att.done)
		})
	}

	select {
	case <-att.done:
		if ctx.Err() != nil { // both ready: the caller's end wins, as it would have a moment later
			g.orphan(att)
			return nil, ctx.Err()
		}
		if att.err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, att.err)
		}
		return att.c, nil
	case <-ctx.Done():
		g.orphan(att)
		return nil, ctx.Err()
	}
}

// attempt is one connection attempt; c and err are set before done is
// closed.
type attempt struct {
	done chan struct{}
	c    driver.Conn
	err  error
}

// maxOrphans bounds the attempts whose caller left that a gate keeps for
// the next Connect; a connection made beyond it is closed.
const maxOrphans = 8

// orphan keeps att, whose caller left, for the next Connect: unless it
// failed, or the gate is closed or has maxOrphans already, in which case
// its connection is closed once made.
func (g *Gate) orphan(att *attempt) {
	g.mu.Lock()
	keep := !g.closed && len(g.orphans) < maxOrphans
	if keep {
		if isClosed(att.done) && att.err != nil {
			keep = false
		} else {
			g.orphans = append(g.orphans, att)
		}
	}
	g.mu.Unlock()
	if !keep {
		g.Go(func() {
			<-att.done
			if att.err == nil {
				att.c.Close()
			}
		})
	}
}

// down reports whether the last connection attempt failed.
func (g *Gate) down() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.failed.IsZero()
}

// record notes the outcome of a connection attempt: nil opens the gate, an
// error closes it for RetryInterval, but for a shortage while connections
// work (see shortage.go), which tells the gate's limit function instead.
func (g *Gate) record(err error) {
	signalling := 0
	if err != nil {
		signalling = g.signaller.open() // outside mu: it locks the signaller's *sql.DB
	}
	g.mu.Lock()
	switch {
	case err == nil:
		g.failed, g.lastErr = time.Time{}, nil
	case g.shortage(err, signalling):
		g.mu.Unlock()
		g.notifyLimit()
		return
	default:
		g.failed, g.lastErr = g.now(), err
	}
	g.mu.Unlock()
}

// unavailableError is a refusal by the gate. It matches ErrUnavailable and,
// through the last failure, whatever that was (a *net.OpError, a driver
// error).
type unavailableError struct {
	last  error
	since time.Duration
}

func (e *unavailableError) Error() string {
	return fmt.Sprintf("%v: not retrying for %v after: %v", ErrUnavailable, (RetryInterval - e.since).Round(time.Millisecond), e.last)
}

func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.last} }

// errCutDial refuses a dial to CutAddr.
var errCutDial = errors.New("reqpool: the connection was cut off; its Canceller chases the statement")

// CheckDial refuses at once a dial to CutAddr (see there).
func CheckDial(network string) error {
	if network == CutNetwork {
		return errCutDial
	}
	return nil
}

// Driver implements driver.Connector: the wrapped connector's driver,
// carrying the gate, so that Of finds the gate from a *sql.DB.
func (g *Gate) Driver() driver.Driver { return gateDriver{g.Connector.Driver(), g} }

type gateDriver struct {
	driver.Driver
	gate *Gate
}

// Of returns the Gate that db was opened on (sql.OpenDB(gate)), or nil.
func Of(db *sql.DB) *Gate {
	if d, ok := db.Driver().(gateDriver); ok {
		return d.gate
	}
	return nil
}
