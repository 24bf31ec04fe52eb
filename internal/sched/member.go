package sched

import (
	"context"
	"errors"
	"sync/atomic"
)

// A Member is one request's membership of a Sched, the scheduler's part of
// a reqpool.Handle. It costs its request nothing shared until its first
// Admit: only then does it register, and only a registered member counts
// in Stats.Requests.
//
// Set ID, Parent, Class and Flow before its first Admit, and never after.
type Member struct {
	ID     string          // the request id
	Parent context.Context // the request's context: when it ends, its queued queries are dropped
	Class  *Class          // its class; never nil
	Flow   string          // its flow's name in Class; "" for none

	state atomic.Int32 // fresh, registered or released; see enter and Release
	stop  func() bool  // unregisters the AfterFunc on Parent; set by enter, called by Release
	req   *request     // its place in the scheduler, made by enter; guarded by Sched.mu
}

// The states of a Member. fresh → registered on the first Admit, and
// fresh or registered → released when the request ends.
const (
	fresh int32 = iota
	registered
	released
)

// request is one registered Member's place in the scheduler: its queued
// groups, its counts and its key.
type request struct {
	// Guarded by Sched.mu.
	queuedGroups groupList     // groups with queued queries, oldest first
	liveGroups   groupList     // groups whose caller has not had its outcome, for cancelling them all
	queued       int           // queries admitted and not started
	running      int           // queries executing in slots of their own
	key          uint64        // oldest queued group's arrival + (queued+running)×keyScale; see reqpool.Pool
	index        int           // position in flow.ready, or -1
	seq          uint64        // registration order, the tie-break
	released     bool          // the member was released: no more Fanouts
	drained      chan struct{} // closed when running drops to 0 after release; nil unless someone waits

	// Set by register and never changed.
	flow  *flow  // the flow (and through it the class) it belongs to
	id    string // the member's request id, for LiveRequests
	since stamp  // when it registered (its first Fanout)
}

// errReleased is what enter says of a released member; Admit reports it
// as RefusedReleased.
var errReleased = errors.New("sched: member released")

// enter registers m with s, on its first Admit, or returns errReleased once
// m is released. Callers hold mu.
func (s *Sched) enter(m *Member) error {
	if m.state.Load() == registered {
		return nil
	}
	if !m.state.CompareAndSwap(fresh, registered) {
		return errReleased
	}
	m.req = s.register(m.ID, m.Class, m.Flow)
	// Dropping queued work is the one reaction to the request's end that
	// must not wait for a Fanout caller to wake up (it may be busy running a
	// query), so it is registered here, once per member.
	m.stop = context.AfterFunc(m.Parent, func() {
		s.mu.Lock()
		s.cancelRequest(m.req, context.Cause(m.Parent))
		s.mu.Unlock()
	})
	return nil
}

// register returns a new request for a member with request id id, in
// class c and the flow named flow there, added to the scheduler. Callers
// hold mu.
func (s *Sched) register(id string, c *Class, flow string) *request {
	s.seq++
	r := &request{index: -1, seq: s.seq, queuedGroups: groupList{kind: queuedList}, liveGroups: groupList{kind: liveList},
		flow: c.flowFor(flow), id: id, since: now()}
	s.requests[r] = struct{}{}
	return r
}

// Release ends m's request: later Admits refuse it (RefusedReleased), its
// queued queries are dropped, its executing ones see their context
// cancelled, and Release returns once none of them executes in a slot of
// its own. A member that never fanned out is released without touching
// anything shared. Later calls do nothing.
func (s *Sched) Release(m *Member) {
	if m.state.CompareAndSwap(fresh, released) {
		return
	}
	s.mu.Lock()
	if !m.state.CompareAndSwap(registered, released) {
		s.mu.Unlock()
		return
	}
	m.stop()
	r := m.req
	s.cancelRequest(r, context.Canceled)
	s.unregister(r)
	var drained chan struct{}
	if r.running > 0 {
		r.drained = make(chan struct{})
		drained = r.drained
	}
	s.mu.Unlock()
	if drained != nil {
		<-drained
	}
}

// unregister takes r, whose member is released, out of the scheduler's
// requests. Callers hold mu.
func (s *Sched) unregister(r *request) {
	r.released = true
	delete(s.requests, r)
	f := r.flow
	f.refs--
	f.class.retire(f)
}

// cancelRequest cancels the context of every live group of r with cause and
// drops every queued query of r. Callers hold mu.
func (s *Sched) cancelRequest(r *request, cause error) {
	for g := r.liveGroups.head; g != nil; g = g.links[liveList].next {
		g.cancel(cause)
	}
	for r.queuedGroups.head != nil {
		s.drop(r.queuedGroups.head)
	}
}
