package reqpool

import (
	"cmp"
	"slices"
	"time"
)

// liveRequest is a copy of one registered request, as Pool.DebugHandler
// shows it.
type liveRequest struct {
	id      string
	class   *class    // its class; only the fields set by newSched are read after the copy
	flow    string    // its flow's name; "" for its class's anon flow
	since   time.Time // when it registered
	queued  int       // queries admitted and not started
	running int       // queries executing in slots of their own, as Stats.Running counts them
	place   int       // its rank in its flow's queue, from 1 (next to start there); 0 when it is not ready

	ready    bool   // it is in its flow's ready queue
	key, seq uint64 // its order there

	// Its flow's order in its class's ready queue, as it was at the copy;
	// meaningful only when ready. flowRunning and flowTurn are what
	// flow.before compares, and flowHead breaks their ties the way the
	// queue does: the flow at its top is the one the class serves next.
	flowRunning int
	flowTurn    uint64
	flowHead    bool
	classIndex  int // its class's index in sched.classes, set after the copy
}

// liveRequests returns the registered requests: first the ready ones, in
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
// listing's. With one class and one flow, as in a pool without Classes and
// Classify, this is the order in which the pool will serve the requests,
// and places run from 1 through the whole queue.
//
// It holds mu only to copy the requests' fields: O(requests), with one
// allocation. The sort runs after, outside the lock.
func (s *sched) liveRequests() []liveRequest {
	s.mu.Lock()
	all := make([]liveRequest, 0, len(s.requests))
	for r := range s.requests {
		f := r.flow
		all = append(all, liveRequest{id: r.id, class: f.class, flow: f.name, since: epoch.Add(r.since),
			queued: r.queued, running: r.running, ready: r.index >= 0, key: r.key, seq: r.seq,
			flowRunning: f.running, flowTurn: f.turn, flowHead: f.index == 0})
	}
	s.mu.Unlock()

	for i := range all {
		all[i].classIndex = slices.Index(s.classes, all[i].class)
	}
	slices.SortFunc(all, compareLive)
	for i := range all {
		switch {
		case !all[i].ready:
		case i > 0 && all[i-1].ready && all[i-1].classIndex == all[i].classIndex && all[i-1].flow == all[i].flow:
			all[i].place = all[i-1].place + 1
		default:
			all[i].place = 1
		}
	}
	return all
}

// compareLive is liveRequests' order: the ready requests in queue order,
// then the others by registration. Two requests of one flow have equal
// flow fields, and the flows of a class differ in name at least, so the
// flow fields order flows and leave a flow's requests to compareReady.
func compareLive(a, b liveRequest) int {
	if c := trueFirst(a.ready, b.ready); c != 0 || !a.ready {
		return cmp.Or(c, cmp.Compare(a.seq, b.seq))
	}
	return cmp.Or(
		cmp.Compare(a.classIndex, b.classIndex),
		compareFlows(a.flowRunning, a.flowTurn, b.flowRunning, b.flowTurn),
		trueFirst(a.flowHead, b.flowHead),
		cmp.Compare(a.flow, b.flow),
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
