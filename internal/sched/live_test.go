package sched

import (
	"slices"
	"testing"
)

// classedRow is a live request as the tests of classes and flows check it.
type classedRow struct {
	id, class, flow        string
	queued, running, place int
}

func TestLiveRequests(t *testing.T) {
	s := testSched(t, Config{Workers: 4, PerRequest: 2})
	capped := s.reg("capped")
	s.admitN(t, capped, 5)
	s.next()
	s.next() // capped runs 2, its cap: not ready
	big, small := s.reg("big"), s.reg("small")
	s.reg("idle")
	s.admitN(t, big, 6)
	s.admitN(t, small, 1)

	type row struct {
		id                     string
		queued, running, place int
	}
	var got []row
	for _, r := range s.LiveRequests() {
		got = append(got, row{r.ID, r.Queued, r.Running, r.Place})
	}
	want := []row{{"small", 1, 0, 1}, {"big", 6, 0, 2}, {"capped", 3, 2, 0}, {"idle", 0, 0, 0}}
	if !slices.Equal(got, want) {
		t.Errorf("live requests %+v, want %+v: the queue in order, then the others oldest first", got, want)
	}
}

// TestLiveRequestsClasses: the queue is listed by class, then by flow
// in the order its class would serve them now (fewest executing, then the
// older turn, then the class's next flow among equals, then by name), then
// by key; places count within a flow.
func TestLiveRequestsClasses(t *testing.T) {
	s := testSched(t, Config{Workers: 4, Classes: []ClassConfig{{Name: "web", Share: 2}, {Name: "batch"}}})
	web, batch := s.classes[0], s.classes[1]
	reg := func(id string, c *Class, flow string, n int) {
		r := s.register(id, c, flow)
		if n > 0 {
			s.admitN(t, r, n)
		}
	}
	reg("c1", web, "tenant-c", 2)
	reg("m1", web, "tenant-m", 1)
	if g := s.next(); g == nil || g.req.id != "c1" {
		t.Fatalf("the first query started is %v, want c1's (its flow was ready first)", g)
	}
	// tenant-c runs one and comes last; tenant-m became ready a turn
	// before tenant-b and the anon flow, which tie on own and turn and go
	// by name ("" first).
	reg("b1", web, "tenant-b", 1)
	reg("anon1", web, "", 3)
	reg("anon2", web, "", 1)
	reg("e1", batch, "etl", 2)
	if g := s.next(); g == nil || g.req.id != "e1" {
		t.Fatalf("the second query started is %v, want e1's (batch is the further below its share)", g)
	}
	reg("e2", batch, "etl", 1)
	reg("l1", batch, "ml", 1)
	reg("idle", web, "tenant-q", 0)

	var got []classedRow
	live := s.LiveRequests()
	for _, r := range live {
		got = append(got, classedRow{r.ID, r.Class, r.Flow, r.Queued, r.Running, r.Place})
	}
	want := []classedRow{
		{"m1", "web", "tenant-m", 1, 0, 1},
		{"anon2", "web", "", 1, 0, 1},
		{"anon1", "web", "", 3, 0, 2},
		{"b1", "web", "tenant-b", 1, 0, 1},
		{"c1", "web", "tenant-c", 1, 1, 1},
		{"l1", "batch", "ml", 1, 0, 1},
		{"e2", "batch", "etl", 1, 0, 1},
		{"e1", "batch", "etl", 1, 1, 2},
		{"idle", "web", "tenant-q", 0, 0, 0},
	}
	if !slices.Equal(got, want) {
		t.Errorf("live requests\n%+v, want\n%+v", got, want)
	}
	// Each class's first listed request is the one it would start next.
	for _, c := range s.classes {
		i := slices.IndexFunc(live, func(r LiveRequest) bool { return r.Class == c.name })
		if next := c.ready[0].ready[0]; live[i].ID != next.id {
			t.Errorf("class %s lists %s first, and would start %s next", c.name, live[i].ID, next.id)
		}
	}
}

// TestLiveRequestsTie: of two flows with as many executing whose turns
// came at once, the one the class serves next is listed first, whatever
// their names.
func TestLiveRequestsTie(t *testing.T) {
	s := testSched(t, Config{Workers: 1})
	c := s.classes[0]
	for _, flow := range []string{"tenant-z", "", "tenant-a"} {
		s.admitN(t, s.register("in-"+flow, c, flow), 1)
	}
	var got []string
	for _, r := range s.LiveRequests() {
		got = append(got, r.Flow)
	}
	if next := c.ready[0]; next.name != "tenant-z" || !slices.Equal(got, []string{"tenant-z", "", "tenant-a"}) {
		t.Errorf("flows listed %q, with %q next, want tenant-z (next), then by name", got, next.name)
	}
}
