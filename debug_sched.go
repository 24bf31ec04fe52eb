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
	since   time.Time // when it registered
	queued  int       // queries admitted and not started
	running int       // queries executing in slots of their own, as Stats.Running counts them
	place   int       // its rank in the queue, from 1 (next to start); 0 when it is not ready

	ready    bool   // it is in sched.ready
	key, seq uint64 // its order there
}

// liveRequests returns the registered requests: first the ready ones in
// the order the scheduler will serve them (ready's order: by key, then by
// seq), each with its place, then the others, oldest first. A request that
// is not ready has nothing queued, or is at its PerRequest cap.
//
// It holds mu only to copy the requests' fields: O(requests), with one
// allocation. The sort runs after, outside the lock.
func (s *sched) liveRequests() []liveRequest {
	s.mu.Lock()
	all := make([]liveRequest, 0, len(s.requests))
	for r := range s.requests {
		all = append(all, liveRequest{id: r.id, since: epoch.Add(r.since), queued: r.queued, running: r.own,
			ready: r.index >= 0, key: r.key, seq: r.seq})
	}
	s.mu.Unlock()

	slices.SortFunc(all, func(a, b liveRequest) int {
		switch {
		case a.ready != b.ready:
			if a.ready {
				return -1
			}
			return 1
		case a.ready:
			return compareReady(a.key, a.seq, b.key, b.seq)
		}
		return cmp.Compare(a.seq, b.seq)
	})
	for i := range all {
		if all[i].ready {
			all[i].place = i + 1
		}
	}
	return all
}
