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

func (g *Gate) connClosed() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live--
}

// shortage notes a connection attempt refused for err, and reports whether
// it is a shortage (see IsShortage) that leaves connections working: then
// the limit is what they can run at once, the gate's open sockets but the
// signaller's (signalling). Callers hold g.mu.
func (g *Gate) shortage(err error, signalling int) bool {
	if g.setLimit == nil || !IsShortage(err) || g.live-signalling <= 0 {
		return false
	}
	g.limit = g.live - signalling
	g.scheduleProbe()
	return true
}

// scheduleProbe starts the next shortage probe in RetryInterval, unless one
// is due or under way. Callers hold g.mu.
func (g *Gate) scheduleProbe() {
	if g.probe == nil && !g.closed {
		g.probe = time.AfterFunc(RetryInterval, g.probeShortage)
	}
}

// probeShortage is a connection attempt of the gate's own during a
// shortage. A connection it makes is kept for the next Connect (an orphan),
// and the limit grows to the connections open; a refusal leaves the limit
// as it is. The next probe follows in RetryInterval, until the limit is
// enough.
func (g *Gate) probeShortage() {
	g.mu.Lock()
	if g.closed || g.limit == 0 {
		g.probe = nil
		g.mu.Unlock()
		return
	}
	g.inFlight++ // Close waits for the probe, as for the gate's other work
	g.mu.Unlock()
	defer g.leave()

	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	c, err := g.Connector.Connect(ctx)
	signalling := g.signaller.open() // outside mu: it locks the signaller's *sql.DB
	g.mu.Lock()
	g.probe = nil
	if err == nil && len(g.orphans) < maxOrphans {
		att := &attempt{done: make(chan struct{}), c: c}
		close(att.done)
		g.orphans = append(g.orphans, att)
		c = nil
	}
	if err == nil {
		g.limit = g.live - signalling
		if g.limit >= g.enough || c != nil { // c: maxOrphans unadopted, so connections are to spare
			g.limit = 0
		}
	}
	if g.limit > 0 {
		if err == nil && !g.closed { // the server has room again: grow at once
			g.probe = time.AfterFunc(0, g.probeShortage)
		} else {
			g.scheduleProbe()
		}
	}
	limit, set := g.limit, g.setLimit
	g.mu.Unlock()
	if c != nil {
		c.Close()
	}
	set(limit)
}

// probeTimeout bounds one shortage probe.
const probeTimeout = 5 * time.Second
