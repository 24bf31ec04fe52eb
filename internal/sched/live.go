package sched

import (
	"cmp"
	"slices"
	"time"
)

// LiveRequest is a copy of one registered request, as reqpool's debug page
// shows it.
type LiveRequest struct {
	ID      string
	Class   string    // its class's name
	Flow    string    // its flow's name; "" for its class's anon flow
	Since   time.Time // when it registered
	Queued  int       // queries admitted and not started
	Running int       // queries executing in slots of their own, as Stats.Running counts them
	Place   int       // its rank in its flow's queue, from 1 (next to start there); 0 when it is not ready

	ready    bool   // it is in its flow's ready queue
	key, seq uint64 // its order there

	// Its flow's order in its class's ready queue, as it was at the copy;
	// meaningful only when ready. flowRunning and flowTurn are what
	// flow.before compares, and flowHead breaks their ties the way the
	// queue does: the flow at its top is the one the class serves next.
	flowRunning int
	flowTurn    uint64
	flowHead    bool
	classIndex  int // its class's index in Sched.classes
}

// LiveRequests returns the registered requests: first the ready ones, in
// queue order, then the others, oldest first. A request that is not ready
// has nothing queued, or is at its PerRequest cap.
//
// Queue order groups the ready requests by class, in Config.Classes' order;
// within a class, by flow, in the order the class would serve its flows
// now (fewest executing first, then the one whose turn came longer ago;
// the class's next flow first among equals, then by name); within a flow,
// in the order the flow serves them (by key, then by seq). Each ready
// request's place is its rank within its flow. No static order across
// flows and classes exists, since which of them goes next depends on what
// executes when a slot frees up; within a flow the scheduler's order is the
// listing's. With one class and one flow, as in a pool without classes and
// flows, this is the order in which the pool will serve the requests,
// and places run from 1 through the whole queue.
//
// It holds mu only to copy the requests' fields: O(requests), with one
// allocation. The sort runs after, outside the lock.
func (s *Sched) LiveRequests() []LiveRequest {
	s.mu.Lock()
	all := make([]LiveRequest, 0, len(s.requests))
	for r := range s.requests {
		f := r.flow
		all = append(all, LiveRequest{ID: r.id, Class: f.class.name, Flow: f.name, Since: r.since.time(),
			Queued: r.queued, Running: r.running, ready: r.index >= 0, key: r.key, seq: r.seq,
			flowRunning: f.running, flowTurn: f.turn, flowHead: f.index == 0, classIndex: slices.Index(s.classes, f.class)})
	}
	s.mu.Unlock()

	slices.SortFunc(all, compareLive)
	for i := range all {
		switch {
		case !all[i].ready:
		case i > 0 && all[i-1].ready && all[i-1].classIndex == all[i].classIndex && all[i-1].Flow == all[i].Flow:
			all[i].Place = all[i-1].Place + 1
		default:
			all[i].Place = 1
		}
	}
	return all
}

// compareLive is LiveRequests' order: the ready requests in queue order,
// then the others by registration. Two requests of one flow have equal
// flow fields, and the flows of a class differ in name at least, so the
// flow fields order flows and leave a flow's requests to compareReady.
func compareLive(a, b LiveRequest) int {
	if c := trueFirst(a.ready, b.ready); c != 0 || !a.ready {
		return cmp.Or(c, cmp.Compare(a.seq, b.seq))
	}
	return cmp.Or(
		cmp.Compare(a.classIndex, b.classIndex),
		compareFlows(a.flowRunning, a.flowTurn, b.flowRunning, b.flowTurn),
		trueFirst(a.flowHead, b.flowHead),
		cmp.Compare(a.Flow, b.Flow),
		compareReady(a.key, a.seq, b.key, b.seq),
	)
}

// trueFirst orders true before false.
func trueFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}
