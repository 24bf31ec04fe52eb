package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/reqpool/reqpool"
)

// Scenario 11, tenants (issue 10's second goal): tenant A has 40 clients
// and tenant B one, all sending Fanouts of 2 back to back. When every
// request counts alike, B's requests wait behind A's; with the tenant as
// the flow (Classify reads a header), the two tenants share the workers
// equally, and B, which wants only 2, should never wait long.
func init() {
	register(Scenario{ID: 11, Name: "tenants", Title: "Fair flows: a small tenant beside a large one", Run: runTenants})
}

func runTenants(ctx context.Context, env *Env) (*Section, error) {
	p := mixParams{Workers: 8, Task: 20 * time.Millisecond, Warm: 100 * time.Millisecond, Window: time.Second}
	aClients := 40
	if env.Quick {
		p.Task, p.Warm, p.Window = 5*time.Millisecond, 30*time.Millisecond, 200*time.Millisecond
		aClients = 12
	}
	a := loadGroup{Name: "A", Path: "/fanout", Tenant: "A", N: 2, Clients: aClients}
	b := loadGroup{Name: "B", Path: "/fanout", Tenant: "B", N: 2, Clients: 1}
	classify := func(r *http.Request) (class, flow string) { return "", r.Header.Get(tenantHeader) }
	withFlows := func() (Contender, error) {
		return newReqpoolWith(reqpool.Config{Workers: p.Workers, Classify: classify})
	}
	tenantCap := p.Workers / 2
	var (
		rows                           []mixRow
		alone, before, after, subpools string
	)
	for _, f := range env.Contenders {
		switch f.Name {
		case "reqpool":
			alone = "B alone (reqpool)"
			before = "reqpool, no Classify"
			after = "reqpool, flow = " + tenantHeader
			rows = append(rows,
				mixRow{Name: alone, Palette: f.Name, New: withFlows, Alone: true},
				mixRow{Name: before, Palette: f.Name, New: func() (Contender, error) {
					return newReqpool(PoolConfig{Workers: p.Workers})
				}},
				mixRow{Name: after, Palette: f.Name, New: withFlows})
		default:
			rows = append(rows, mixRow{Name: f.Name, Palette: f.Name, New: func() (Contender, error) {
				return f.New(PoolConfig{Workers: p.Workers})
			}})
			if f.Name == "pond" {
				subpools = fmt.Sprintf("pond, subpool of %d per tenant", tenantCap)
				rows = append(rows, mixRow{Name: subpools, Palette: f.Name, New: func() (Contender, error) {
					return newPondParts(p.Workers, map[string]int{"A": tenantCap, "B": tenantCap}, func(r *http.Request) string {
						return r.Header.Get(tenantHeader)
					}), nil
				}})
			}
		}
	}
	spec := mixSpec{
		Name: "tenants", Params: p, Groups: []loadGroup{b, a}, Protected: 0, Other: 1, Rows: rows,
		Chart: "tenants_b.svg",
		Title: fmt.Sprintf("Tenant B (1 client) beside tenant A (%d clients), Fanouts of %d×%s, Workers=%d",
			a.Clients, a.N, p.Task, p.Workers),
	}
	stats, raw, chart, err := runMixCharted(ctx, env, spec)
	if err != nil {
		return nil, err
	}
	get := func(name string) *mixRowStats { return rowStats(stats, name) }
	task := ms(p.Task)
	sec := &Section{
		Setup: fmt.Sprintf("Workers=%d; every query is the simulated one of %s (as in scenario 10), through the real server. "+
			"One class. Tenant A has %d clients and tenant B one; every client sends a request of %d queries as soon as its "+
			"last is answered (or %s after a 503), with its tenant in the `%s` header. The clients start %s before a "+
			"window of %s opens. Measured as in scenario 10, of the requests sent in the window: B's refused, over all "+
			"repetitions; the p50 and p99 of B's answered, within each repetition and then the median over %d "+
			"repetitions, with the slowest of any repetition beside them (B sends fewer requests where they are slow); "+
			"A's queries answered per second; and how busy the pool was. A's requests still unanswered when the window "+
			"closes are hung up and not counted.\n\n"+
			"Rows: B alone on reqpool, for reference; reqpool without `Classify`, where every request is its own flow "+
			"and each of A's %d requests counts as much as B's one; reqpool with `Classify` returning the class \"\" "+
			"and the flow `r.Header.Get(\"%s\")`, so that the two tenants share the workers equally; each peer as it "+
			"is, one shared pool; and pond with a subpool of %d workers per tenant.\n\n"+
			"As in scenario 10, the workers turn over together, once a round of %s, since A always has queries waiting. "+
			"B's next request reaches the server a moment after its last one's queries ended, when A's waiting queries "+
			"have just taken those workers, so it mostly waits for the next round: with flows, most of B's requests take "+
			"about 2 query times (those that get in first, 1), the least a pool that keeps its workers busy and preempts "+
			"nothing can do here. A's queries per second are lower with flows by about what B now gets done.",
			p.Workers, p.Task, a.Clients, a.N, p.Task, tenantHeader, p.Warm, p.Window, env.reps(), a.Clients,
			tenantHeader, tenantCap, p.Task),
		Tables: []Table{mixTable(spec, stats)},
		Charts: []Chart{chart},
		Raw:    raw,
		Notes: []string{"**The peers cannot express flows.** errgroup, `semaphore.Weighted`, pond and ants know " +
			"nothing of tenants: they serve tasks in the order they come (or, errgroup, in the order `database/sql` hands " +
			"out connections), so a tenant's share of the workers is its share of the queued tasks, and A's 40 clients " +
			"take nearly all of them. The nearest a user can build is a static partition per tenant: pond's subpools (the " +
			"row above) or a semaphore per tenant by hand. It protects B, but every tenant must be known ahead and given a " +
			"cap: B leaves idle the part of its cap it does not use, which A may not take, and with many tenants the caps " +
			"either add up past Workers (and protect no one) or leave each a sliver. reqpool's flows need no list of " +
			"tenants: `Classify` names them per request, they exist only while they have requests, and the workers are " +
			"shared equally among the flows that have work, the rest going to whoever wants it."},
	}
	if st := get(after); st != nil {
		measured := fmt.Sprintf("p99 %s ms = %.1f query times", fmtMs(st.P99), st.P99/task)
		if al := get(alone); al != nil {
			measured += fmt.Sprintf(" (B alone: %s ms", fmtMs(al.P99))
			if bf := get(before); bf != nil {
				measured += fmt.Sprintf("; without Classify: %s ms = %.1f query times", fmtMs(bf.P99), bf.P99/task)
			}
			measured += ")"
		}
		sec.Goals = append(sec.Goals,
			Goal{Goal: fmt.Sprintf("tenants: B's p99 ≤ 2.5 query times (%s ms)", fmtMs(2.5*task)), Measured: measured, Met: st.P99 <= 2.5*task},
			Goal{Goal: "tenants: 0 requests refused", Measured: fmt.Sprintf("%d of B's %d, %d of A's %d", st.Refused, st.Sent,
				st.OtherRefused, st.OtherSent), Met: st.Sent > 0 && st.Refused == 0 && st.OtherRefused == 0})
		measured = fmtPct(st.Busy)
		if s := get(subpools); s != nil {
			measured += fmt.Sprintf(" (%s: %s, B's p99 %s ms)", subpools, fmtPct(s.Busy), fmtMs(s.P99))
		}
		sec.Goals = append(sec.Goals, Goal{Goal: "tenants: pool ≥ 85% busy", Measured: measured, Met: st.Busy >= 0.85})
	}
	return sec, nil
}
