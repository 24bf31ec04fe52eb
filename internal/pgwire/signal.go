package pgwire

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
)

// MaxSignalConns bounds the connections a Gate keeps to cancel statements
// with pg_cancel_backend (see Gate.signal).
const MaxSignalConns = 2

// signaller cancels the statements of a Gate's direct connections with
// pg_cancel_backend over connections of its own, opened with the first
// direct connection and kept: a query on an open connection costs the
// server a signal, where a CancelRequest costs it a process (measured on a
// 2-core machine: 26 ms of CPU for each CancelRequest). The cancels that
// wait while one query runs go out together in the next. It needs the
// backend's real process id, so it serves only connections to PostgreSQL
// itself, never through PgBouncer; and PostgreSQL lets a role signal only
// its own backends (or with pg_signal_backend), so a refusal switches the
// gate back to CancelRequests.
type signaller struct {
	mu      sync.Mutex  // protects the fields below
	db      *sql.DB     // at most MaxSignalConns connections through the gate's connector; nil until opened
	closed  bool        // the gate is closed: open no more
	refused bool        // pg_cancel_backend failed, other than by timing out
	queue   []signalReq // waiting for the next query
	running int         // callers running queries (runSignals): 0 or 1
}

type signalReq struct {
	pid  uint32
	done chan bool // buffered: whether the backend was signalled
}

// signal asks the server to cancel the statement of backend pid with
// pg_cancel_backend, and reports whether it did (the backend exists and
// the role may signal it). false means: send a CancelRequest instead.
func (g *Gate) signal(ctx context.Context, pid uint32) bool {
	s := &g.signaller
	r := signalReq{pid, make(chan bool, 1)}
	s.mu.Lock()
	if s.refused || s.db == nil {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, r)
	lead := s.running == 0
	if lead {
		s.running++
	}
	s.mu.Unlock()
	if lead {
		g.runSignals()
	}
	select {
	case ok := <-r.done:
		return ok
	case <-ctx.Done():
		return false
	}
}

// runSignals sends the queued cancels, one query for all those waiting,
// until none is left. One caller at a time runs it: two at once made the
// hang-up soak's tail latency worse, not better.
func (g *Gate) runSignals() {
	s := &g.signaller
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		if len(batch) == 0 {
			s.running--
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		var pids strings.Builder
		for i, r := range batch {
			if i > 0 {
				pids.WriteByte(',')
			}
			pids.WriteString(strconv.FormatUint(uint64(r.pid), 10))
		}
		signalled, err := g.signalAll(&pids)
		if err != nil {
			s.mu.Lock()
			s.refused = s.refused || !transient(err)
			s.mu.Unlock()
		}
		for _, r := range batch {
			r.done <- signalled[r.pid]
		}
	}
}

// signalAll runs pg_cancel_backend for each process id in pids, a
// comma-separated list (text, which both drivers pass as it is), and
// returns those it signalled.
func (g *Gate) signalAll(pids *strings.Builder) (map[uint32]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	g.signaller.mu.Lock()
	db := g.signaller.db
	g.signaller.mu.Unlock()
	rows, err := db.QueryContext(ctx, "SELECT p, pg_cancel_backend(p) FROM unnest(string_to_array($1::text, ',')::int4[]) AS p", pids.String())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	signalled := make(map[uint32]bool)
	for rows.Next() {
		var pid int64
		var ok bool
		if err := rows.Scan(&pid, &ok); err != nil {
			return signalled, err
		}
		signalled[uint32(pid)] = ok
	}
	return signalled, rows.Err()
}

// transient reports whether err says nothing about pg_cancel_backend
// itself: the query timed out, or the server could not be reached.
func transient(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, ErrUnavailable) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne)
}

// openSignaller opens the signaller's connection pool, the first time,
// and one connection in it in the background: the gate's first direct
// connection calls it, so that the connection is there, or on its way,
// before the first statement needs a cancel. (Its own connection comes
// back here through the gate's connector, and returns at once.)
func (g *Gate) openSignaller() {
	s := &g.signaller
	s.mu.Lock()
	if s.db != nil || s.closed {
		s.mu.Unlock()
		return
	}
	db := sql.OpenDB(g) // through the gate: calm in an outage too
	db.SetMaxOpenConns(MaxSignalConns)
	db.SetMaxIdleConns(MaxSignalConns)
	s.db = db
	s.mu.Unlock()
	g.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
		defer cancel()
		db.PingContext(ctx)
	})
}

// open returns how many connections the signaller has established (in use
// or idle; not those being opened, which database/sql counts as open).
func (s *signaller) open() int {
	s.mu.Lock()
	db := s.db
	s.mu.Unlock()
	if db == nil {
		return 0
	}
	st := db.Stats()
	return st.InUse + st.Idle
}

// closeSignaller closes the signaller's connections, if it has any.
func (g *Gate) closeSignaller() {
	s := &g.signaller
	s.mu.Lock()
	db := s.db
	s.closed = true
	s.mu.Unlock()
	if db != nil {
		db.Close()
	}
}
