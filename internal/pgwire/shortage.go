package pgwire

import (
	"context"
	"errors"
	"strings"
	"time"
)

// IsShortage reports whether err is a server refusing a new connection for
// lack of connection slots while it serves others: PostgreSQL's
// too_many_connections (53300: max_connections, or a role's or database's
// CONNECTION LIMIT) and insufficient_resources (53000), and PgBouncer's "no
// more connections allowed" (max_client_conn).
func IsShortage(err error) bool {
	if err == nil {
		return false
	}
	var s interface{ SQLState() string }
	if errors.As(err, &s) {
		switch s.SQLState() {
		case "53300", "53000":
			return true
		}
	}
	return strings.Contains(err.Error(), "no more connections allowed")
}

// A shortage is not an outage. When a connection attempt meets one (see
// IsShortage) while the gate has connections open, the connections open
// keep working: the gate stays open, and tells its limit function (OnLimit)
// how many statements they can run at once. The pool caps its running
// queries at that, so that queries wait in its queue instead of failing for
// want of a connection. Then the gate makes connection attempts of its own,
// one every RetryInterval while they are refused, one after the other once
// they succeed: each connection made is kept for the next Connect, and the
// limit grows by one; once it is enough (OnLimit), there is no limit any
// more.
//
// Before this, a server with 5 free connections under a pool of 8 workers
// failed 99% of Fanouts: each refusal closed the gate for RetryInterval, and
// failed its Fanout, whose cancelled siblings' connections were then lost.

// OnLimit sets what the gate calls, outside its lock, with the most
// statements its connections can run at once during a shortage, and with 0
// once there is none: set. A shortage is over once the connections can run
// enough statements at once. reqpool.SizeDB sets it to the pool's Workers.
func (g *Gate) OnLimit(enough int, set func(limit int)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.enough, g.setLimit = enough, set
}

// connEstablished and connClosed count the gate's connections open (live):
// those whose server has sent its first ReadyForQuery, and not yet closed.
// A connection attempt under way, or refused, does not count.
func (g *Gate) connEstablished() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live++
}

func (g *Gate) connClosed(drained bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live--
	if drained {
		g.draining--
	}
}

// connDraining counts an established connection closed by its driver while
// the server still runs its statement (Socket.Close): until it closes for
// real, it can run no statement.
func (g *Gate) connDraining() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.draining++
}

// usable returns how many statements the gate's connections can run at
// once: those established and open, but the signaller's (signalling) and
// those draining after a cut-off, which stay busy until their statement
// ends. Callers hold g.mu.
func (g *Gate) usable(signalling int) int { return g.live - g.draining - signalling }

// shortage notes a connection attempt refused for err, and reports whether
// it is a shortage (see IsShortage) that leaves connections working: then
// the limit is what they can run at once. Callers hold g.mu.
func (g *Gate) shortage(err error, signalling int) bool {
	n := g.usable(signalling)
	if g.setLimit == nil || !IsShortage(err) || n <= 0 {
		return false
	}
	g.limit = n
	g.scheduleProbe(RetryInterval)
	return true
}

// scheduleProbe starts the next shortage probe after wait, unless one is
// due or under way or the gate is closing. A probe due counts as the
// gate's work in flight (Close waits for it, or stops it). Callers hold
// g.mu.
func (g *Gate) scheduleProbe(wait time.Duration) {
	if g.probe == nil && !g.closing {
		g.inFlight++ // given back by probeShortage, or by Close if it stops the timer
		g.probe = time.AfterFunc(wait, g.probeShortage)
	}
}

// probeShortage is a connection attempt of the gate's own during a
// shortage. A connection it makes is kept for the next Connect (an orphan),
// and the limit grows to the connections open; a refusal leaves the limit
// as it is. The next probe follows at once after a success, in
// RetryInterval after a refusal, until the limit is enough.
func (g *Gate) probeShortage() {
	defer g.leave() // the inFlight of scheduleProbe
	g.mu.Lock()
	if g.closing || g.limit == 0 {
		g.probe = nil
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	c, err := g.Connector.Connect(ctx)
	signalling := g.signaller.open() // outside mu: it locks the signaller's *sql.DB
	g.mu.Lock()
	g.probe = nil
	if err == nil && !g.closing && len(g.orphans) < maxOrphans {
		att := &attempt{done: make(chan struct{}), c: c}
		close(att.done)
		g.orphans = append(g.orphans, att)
		c = nil
	}
	if err == nil {
		// c: maxOrphans unadopted (or closing), so connections are to spare.
		if g.limit = g.usable(signalling); g.limit >= g.enough || c != nil {
			g.limit = 0
		}
	}
	switch {
	case g.limit > 0 && err == nil:
		g.scheduleProbe(0) // the server has room again: grow at once
	case g.limit > 0:
		g.scheduleProbe(RetryInterval)
	}
	g.mu.Unlock()
	if c != nil {
		c.Close()
	}
	g.notifyLimit()
}

// notifyLimit tells the gate's limit function (OnLimit) the limit as it is
// now. Callers do not hold g.mu; notifyMu orders the calls, so that the
// last one carries the latest limit, whichever goroutine computed which.
func (g *Gate) notifyLimit() {
	g.notifyMu.Lock()
	defer g.notifyMu.Unlock()
	g.mu.Lock()
	limit, set := g.limit, g.setLimit
	g.mu.Unlock()
	if set != nil {
		set(limit)
	}
}

// probeTimeout bounds one shortage probe.
const probeTimeout = 5 * time.Second
