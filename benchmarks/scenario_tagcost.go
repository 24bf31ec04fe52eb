package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/reqpgx"
)

// Scenario 8, the request-id tag's cost per driver: reqpool.Select, Get and
// Exec end every statement with /*request_id='…'*/, a text that is new for
// every request. What that costs depends on how the driver sends a
// statement, so each way of opening PostgreSQL runs the same small Fanouts
// untagged and tagged, directly and (reqpool's openers) through PgBouncer,
// where the drivers' defaults are checked for right answers instead.
func init() {
	register(Scenario{ID: 8, Name: "tagcost", Title: "The request-id tag's cost per driver", Run: runTagCost,
		Needs: []string{"DATABASE_URL"}, NoContenders: true})
}

const (
	tagWorkers = 8  // the pool's Workers; the database pool gets Workers + reqpool.SpareConns
	tagCallers = 16 // closed-loop callers, each one request at a time
)

// opener is one way of opening PostgreSQL for a pool's Fanouts.
type opener struct {
	Name string
	Open func(dsn string, p *reqpool.Pool) (*sqlx.DB, error)
	// Defaults names the opener of the same driver's defaults, which one
	// of reqpool's openers is compared with; empty for the others.
	Defaults string
	Doc      string // what it does, for the section's text
}

// openers are the contenders of the scenario, in table order.
var openers = []opener{
	{Name: "lib/pq defaults", Open: openPQDefaults,
		Doc: "`pq.NewConnector` + `sql.OpenDB` + `reqpool.SizeDB`: a statement with parameters is the unnamed " +
			"statement, sent in two round trips (Parse and Describe, then Bind and Execute)"},
	{Name: "reqpool.OpenPostgres", Open: reqpool.OpenPostgres, Defaults: "lib/pq defaults",
		Doc: "lib/pq with `binary_parameters`: the unnamed statement in one round trip; chased cancels, connection gate"},
	{Name: "pgx defaults", Open: openPGX(nil),
		Doc: "`pgx.ParseConfig` + `stdlib.OpenDB` + `reqpool.SizeDB`: `QueryExecModeCacheStatement`, a named " +
			"prepared statement per text, in a cache of 512 per connection"},
	{Name: "pgx exec", Open: openPGX(new(pgx.QueryExecModeExec)),
		Doc: "reference: pgx defaults with `QueryExecModeExec`, the unnamed statement in one round trip"},
	{Name: "pgx simple_protocol", Open: openPGX(new(pgx.QueryExecModeSimpleProtocol)),
		Doc: "reference: pgx defaults with `QueryExecModeSimpleProtocol`, parameters quoted into the text by the client"},
	{Name: "reqpgx.Open", Open: reqpgx.Open, Defaults: "pgx defaults",
		Doc: "pgx with `QueryExecModeExec`; chased cancels, connection gate"},
}

// openPQDefaults opens PostgreSQL with lib/pq as its documentation shows,
// sized for p.
func openPQDefaults(dsn string, p *reqpool.Pool) (*sqlx.DB, error) {
	c, err := pq.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	reqpool.SizeDB(db, p)
	return sqlx.NewDb(db, "postgres"), nil
}

// openPGX returns an opener of pgx's database/sql driver with its defaults,
// except for the query exec mode when mode is not nil.
func openPGX(mode *pgx.QueryExecMode) func(string, *reqpool.Pool) (*sqlx.DB, error) {
	return func(dsn string, p *reqpool.Pool) (*sqlx.DB, error) {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		if mode != nil {
			cfg.DefaultQueryExecMode = *mode
		}
		db := stdlib.OpenDB(*cfg)
		reqpool.SizeDB(db, p)
		return sqlx.NewDb(db, "pgx"), nil
	}
}

// Routes to the server.
const (
	routeDirect    = "direct"
	routePgBouncer = "PgBouncer"
)

// tagCell is one opener on one route, with its runs untagged and tagged:
// one pair per repetition.
type tagCell struct {
	Opener string
	Route  string
	// Check marks a correctness pass (a driver's defaults through
	// PgBouncer): its wrong and failed Fanouts are the result, not its
	// throughput.
	Check            bool
	Untagged, Tagged []tagRun
}

// runs returns the cell's runs, tagged or not.
func (c *tagCell) runs(tagged bool) []tagRun {
	if tagged {
		return c.Tagged
	}
	return c.Untagged
}

// tagRun is what one side of a pair counted.
type tagRun struct {
	Right, Wrong, Failed int            // Fanouts: all three values right; a value wrong; an error
	PerSec               jsonFloat      // right Fanouts per second
	Codes                map[string]int `json:",omitempty"` // failed Fanouts per SQLSTATE ("" for none)
	FirstErr             string         `json:",omitempty"`
}

// add counts o's Fanouts in r as well.
func (r *tagRun) add(o tagRun) {
	r.Right, r.Wrong, r.Failed = r.Right+o.Right, r.Wrong+o.Wrong, r.Failed+o.Failed
	for k, n := range o.Codes {
		if r.Codes == nil {
			r.Codes = map[string]int{}
		}
		r.Codes[k] += n
	}
	if r.FirstErr == "" {
		r.FirstErr = o.FirstErr
	}
}

// tagRaw is scenario 8's raw data.
type tagRaw struct {
	Workers, Callers, Reps int
	Duration, Check        time.Duration // of each side of a timed pair, and of a correctness pass
	Slice                  time.Duration // how long one side runs before the other takes over
	Server, Bouncer        string        // versions
	Cells                  []*tagCell
}

// cell returns the cell of opener name on route; nil if it did not run.
func (r *tagRaw) cell(route, name string) *tagCell {
	i := slices.IndexFunc(r.Cells, func(c *tagCell) bool { return c.Route == route && c.Opener == name })
	if i < 0 {
		return nil
	}
	return r.Cells[i]
}

// rate returns the median Fanouts/s of opener name on route, tagged or
// not; NaN if it did not run.
func (r *tagRaw) rate(route, name string, tagged bool) float64 {
	var xs []float64
	if c := r.cell(route, name); c != nil {
		for _, run := range c.runs(tagged) {
			xs = append(xs, float64(run.PerSec))
		}
	}
	return median(xs)
}

// ratio returns the median over the repetitions of tagged ÷ untagged
// Fanouts/s of opener name on route: each repetition's pair ran side by
// side, so its ratio is the fairest comparison there is here.
func (r *tagRaw) ratio(route, name string) float64 {
	var xs []float64
	if c := r.cell(route, name); c != nil {
		for i := range min(len(c.Untagged), len(c.Tagged)) {
			xs = append(xs, float64(c.Tagged[i].PerSec)/float64(c.Untagged[i].PerSec))
		}
	}
	return median(xs)
}

func runTagCost(ctx context.Context, env *Env) (*Section, error) {
	dsn, bouncer := os.Getenv("DATABASE_URL"), os.Getenv("PGBOUNCER_URL")
	raw := tagRaw{Workers: tagWorkers, Callers: tagCallers, Reps: min(env.reps(), 3),
		Duration: 3 * time.Second, Check: 1500 * time.Millisecond, Slice: 300 * time.Millisecond}
	warm := 300 * time.Millisecond
	if env.Quick {
		raw.Reps, raw.Duration, raw.Check, raw.Slice, warm = 1, 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond, 20*time.Millisecond
	}
	var err error
	if raw.Server, raw.Bouncer, err = pgVersions(ctx, dsn, bouncer); err != nil {
		return nil, err
	}
	if bouncer != "" {
		admin, err := openBouncerAdmin(bouncer)
		if err != nil {
			return nil, err
		}
		defer admin.Close()
		// The checks' failures cancel the other statements of their
		// Fanouts, pgx sends a CancelRequest when it closes a connection
		// broken mid-statement, and an interrupted run cancels whatever
		// runs: however the scenario ends, it waits until PgBouncer has
		// passed every CancelRequest on (see awaitNoCancels).
		defer func() {
			if err := admin.awaitNoCancels(context.Background(), 100*time.Millisecond, 5*time.Second); err != nil {
				env.Logf("  tagcost: %v", err)
			}
		}()
	}

	// The timed cells: every opener directly, reqpool's through PgBouncer.
	dsns := map[string]string{routeDirect: dsn, routePgBouncer: bouncer}
	var timed []*tagCell
	for _, o := range openers {
		timed = append(timed, &tagCell{Opener: o.Name, Route: routeDirect})
	}
	if bouncer != "" {
		for _, o := range openers {
			if o.Defaults != "" {
				timed = append(timed, &tagCell{Opener: o.Name, Route: routePgBouncer})
			}
		}
	}
	raw.Cells = timed
	for rep := range raw.Reps {
		// Each repetition starts at another place in the list, so that
		// drift over the run favours nobody.
		shift := rep * len(timed) / raw.Reps
		for i := range timed {
			c := timed[(i+shift)%len(timed)]
			if err := c.measure(ctx, dsns[c.Route], warm, raw.Duration, raw.Slice); err != nil {
				return nil, err
			}
		}
		env.Logf("  tagcost: repetition %d/%d done", rep+1, raw.Reps)
	}

	// Last, as they leave named prepared statements behind on PgBouncer's
	// server connections: the drivers' defaults through PgBouncer, checked.
	if bouncer != "" {
		for _, o := range openers {
			if !slices.ContainsFunc(openers, func(x opener) bool { return x.Defaults == o.Name }) {
				continue
			}
			c := &tagCell{Opener: o.Name, Route: routePgBouncer, Check: true}
			if err := c.measure(ctx, bouncer, warm, raw.Check, raw.Slice); err != nil {
				return nil, err
			}
			raw.Cells = append(raw.Cells, c)
		}
		env.Logf("  tagcost: checks through PgBouncer done")
	}
	return tagSection(&raw, bouncer != ""), nil
}

// measure runs c's opener at dsn untagged and tagged side by side, dur
// each, and adds the pair to c. The two sides are two pools, each with a
// database opened by the opener and warmed up for warm; then they take
// turns of slice, untagged first, then tagged twice, untagged twice and so
// on (ABBA, which cancels a steady drift), so that whatever else runs on
// the machine weighs on both alike. Wrong answers and failures are
// counted, not returned: only a failure to set up is an error.
func (c *tagCell) measure(ctx context.Context, dsn string, warm, dur, slice time.Duration) error {
	type side struct {
		p     *reqpool.Pool
		db    *sqlx.DB
		run   tagRun
		spent time.Duration
	}
	var sides [2]side // untagged, tagged
	for i := range sides {
		p, err := reqpool.New(reqpool.Config{Workers: tagWorkers, DisableSQLComment: i == 0})
		if err != nil {
			return err
		}
		defer p.Shutdown(context.Background())
		db, err := openerNamed(c.Opener).Open(dsn, p)
		if err != nil {
			return fmt.Errorf("%s, %s: %w", c.Opener, c.Route, err)
		}
		defer db.Close()
		sides[i].p, sides[i].db = p, db
		tagLoop(ctx, p, db, warm) // opens the connections, and fills pgx's caches with the untagged texts
	}
	turns := max(1, int(dur/slice))
	for i := range 2 * turns {
		s := &sides[(i+1)/2%2]
		start := time.Now()
		s.run.add(tagLoop(ctx, s.p, s.db, dur/time.Duration(turns)))
		s.spent += time.Since(start)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range sides {
		sides[i].run.PerSec = jsonFloat(float64(sides[i].run.Right) / sides[i].spent.Seconds())
	}
	c.Untagged, c.Tagged = append(c.Untagged, sides[0].run), append(c.Tagged, sides[1].run)
	return nil
}

// openerNamed returns the opener of that name.
func openerNamed(name string) opener {
	return openers[slices.IndexFunc(openers, func(o opener) bool { return o.Name == name })]
}

// tagLoop runs tagCallers callers for dur. Each iteration is a request: a
// new handle, one Fanout of three Gets, the values checked, the handle
// released.
func tagLoop(ctx context.Context, p *reqpool.Pool, db *sqlx.DB, dur time.Duration) tagRun {
	var (
		mu  sync.Mutex
		run tagRun
		wg  sync.WaitGroup
	)
	deadline := time.Now().Add(dur)
	for c := range tagCallers {
		wg.Go(func() {
			mine := tagRun{Codes: map[string]int{}}
			for x := int64(c) << 32; time.Now().Before(deadline) && ctx.Err() == nil; x++ {
				hctx, release := p.NewContext(ctx)
				var v [3]int64
				err := reqpool.Fanout(hctx,
					reqpool.Get(db, &v[0], "SELECT $1::bigint * 1000 + 1", x),
					reqpool.Get(db, &v[1], "SELECT $1::bigint * 1000 + 2", x),
					reqpool.Get(db, &v[2], "SELECT $1::bigint * 1000 + 3", x))
				release()
				switch {
				case err != nil && ctx.Err() != nil: // the run was stopped: not the driver's failure
				case err != nil:
					mine.Failed++
					mine.Codes[sqlState(err)]++
					if mine.FirstErr == "" {
						mine.FirstErr = err.Error()
					}
				case v != [3]int64{x*1000 + 1, x*1000 + 2, x*1000 + 3}:
					mine.Wrong++
				default:
					mine.Right++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			run.add(mine)
		})
	}
	wg.Wait()
	return run
}

// sqlState returns the SQLSTATE of the server's error in err, from lib/pq
// or pgx; empty for an error of another kind.
func sqlState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

// tagSection builds the report section: medians over the repetitions.
func tagSection(raw *tagRaw, viaBouncer bool) *Section {
	header := func(last string) []string {
		return []string{"contender", "untagged (Fanouts/s)", "tagged (Fanouts/s)", "tagged / untagged", last}
	}
	direct := Table{
		Caption: "Direct to PostgreSQL:",
		Header:  header("tagged ÷ the driver's defaults untagged"),
	}
	var goals []Goal
	for _, o := range openers {
		un, tg, ratio := raw.rate(routeDirect, o.Name, false), raw.rate(routeDirect, o.Name, true), raw.ratio(routeDirect, o.Name)
		vsDefaults := "–"
		if o.Defaults != "" {
			vsDefaults = fmtRatio(tg / raw.rate(routeDirect, o.Defaults, false))
			goals = append(goals, Goal{
				Goal:     o.Name + ": tagged ≥ 0.95 × untagged, direct",
				Measured: fmt.Sprintf("%s vs %s Fanouts/s (%s)", fmtFloat(tg), fmtFloat(un), fmtRatio(ratio)),
				Met:      ratio >= 0.95,
				Note: fmt.Sprintf("In the same run, tagged / untagged: pgx exec %s, pgx simple_protocol %s, lib/pq defaults %s.",
					fmtRatio(raw.ratio(routeDirect, "pgx exec")), fmtRatio(raw.ratio(routeDirect, "pgx simple_protocol")),
					fmtRatio(raw.ratio(routeDirect, "lib/pq defaults"))),
			})
		}
		direct.Rows = append(direct.Rows, []string{o.Name, fmtFloat(un), fmtFloat(tg), fmtRatio(ratio), vsDefaults})
	}
	s := &Section{Tables: []Table{direct}, Raw: raw}

	if viaBouncer {
		t := Table{
			Caption: fmt.Sprintf("Through PgBouncer (transaction mode). reqpool's openers: Fanouts/s. The drivers' "+
				"defaults: what came back in one pass of %s each (SQLSTATE 26000: prepared statement does not exist; "+
				"42P05: prepared statement already exists, left on the server connection by another client):", raw.Check),
			Header: header("tagged ÷ the driver's defaults untagged, direct"),
		}
		var openerRuns []string
		allRight := true
		for _, c := range raw.Cells {
			if c.Route != routePgBouncer {
				continue
			}
			if c.Check {
				t.Rows = append(t.Rows, []string{c.Opener + " (check)", checkCell(c.Untagged[0]), checkCell(c.Tagged[0]), "–", "–"})
				continue
			}
			tg := raw.rate(routePgBouncer, c.Opener, true)
			t.Rows = append(t.Rows, []string{c.Opener, fmtFloat(raw.rate(routePgBouncer, c.Opener, false)), fmtFloat(tg),
				fmtRatio(raw.ratio(routePgBouncer, c.Opener)), fmtRatio(tg / raw.rate(routeDirect, openerNamed(c.Opener).Defaults, false))})
			var right, bad int
			for _, run := range append(slices.Clone(c.Untagged), c.Tagged...) {
				right, bad = right+run.Right, bad+run.Wrong+run.Failed
			}
			allRight = allRight && bad == 0
			openerRuns = append(openerRuns, fmt.Sprintf("%s %s wrong or failed of %s", c.Opener, fmtInt(int64(bad)), fmtInt(int64(right+bad))))
		}
		s.Tables = append(s.Tables, t)
		goals = append(goals, Goal{
			Goal:     "reqpool's openers through PgBouncer: every Fanout right",
			Measured: strings.Join(openerRuns, "; "),
			Met:      allRight,
			Note:     "The first error is in results/report.json (Raw.Cells[].Untagged[].FirstErr, Tagged[].FirstErr).",
		})
	}
	s.Goals = goals

	var docs strings.Builder
	for _, o := range openers {
		fmt.Fprintf(&docs, "\n- **%s**: %s.", o.Name, o.Doc)
	}
	bouncerText := "PGBOUNCER_URL is not set, so nothing ran through PgBouncer."
	if viaBouncer {
		bouncerText = fmt.Sprintf("Through %s (transaction mode), reqpool's two openers are timed the same way; the "+
			"drivers' defaults are not timed there but checked, since they cannot work through it: one pass each, "+
			"untagged and tagged, counting the Fanouts that came back wrong (a value of another statement) or failed.", raw.Bouncer)
	}
	s.Setup = fmt.Sprintf("Each contender opens %s for pools of Workers=%d, `database/sql` sized by "+
		"`reqpool.SizeDB` (Workers + 2 connections), and serves %d callers in a closed loop. Each iteration is a "+
		"request: a new handle (`pool.NewContext`), one Fanout of three `reqpool.Get` of `SELECT $1::bigint * 1000 + C` "+
		"(C = 1, 2, 3; $1 new every time), the values checked, the handle released. *Untagged* sets "+
		"`Config.DisableSQLComment`; *tagged* is the default, each statement ending in `/*request_id='…'*/` with the "+
		"handle's id: a new text for every request. The two run side by side, on two pools each with a database of "+
		"its own, taking turns of %s (untagged, tagged, tagged, untagged, …) for %s each, so that whatever else runs "+
		"on the machine weighs on both alike. Fanouts/s counts right answers; medians of %d repetitions, and tagged / "+
		"untagged the median of the repetitions' ratios. The contenders are interleaved, in an order that rotates "+
		"each repetition. %s Everything runs on the same 2 cores.\n%s",
		raw.Server, raw.Workers, raw.Callers, raw.Slice, raw.Duration, raw.Reps, bouncerText, docs.String())
	s.Notes = append(s.Notes, tagFindings(raw))
	for _, c := range raw.Cells {
		for i, run := range append(slices.Clone(c.Untagged), c.Tagged...) {
			if !c.Check && run.Wrong+run.Failed > 0 {
				s.Notes = append(s.Notes, fmt.Sprintf("**%s, %s, tagged=%v: %d wrong and %d failed Fanouts** (first error: %s).",
					c.Opener, c.Route, i >= len(c.Untagged), run.Wrong, run.Failed, run.FirstErr))
			}
		}
	}
	return s
}

// checkCell formats a correctness pass: how many Fanouts came back wrong
// or failed, with the SQLSTATEs of the failures.
func checkCell(r tagRun) string {
	out := fmt.Sprintf("%s wrong, %s failed of %s", fmtInt(int64(r.Wrong)), fmtInt(int64(r.Failed)), fmtInt(int64(r.Right+r.Wrong+r.Failed)))
	var codes []string
	for code, n := range r.Codes {
		if code == "" {
			code = "no SQLSTATE"
		}
		codes = append(codes, fmt.Sprintf("%s ×%s", code, fmtInt(int64(n))))
	}
	if len(codes) > 0 {
		slices.Sort(codes)
		out += " (" + strings.Join(codes, ", ") + ")"
	}
	return out
}

// tagFindings explains, from the run's numbers, where the time goes.
func tagFindings(raw *tagRaw) string {
	rate := func(name string, tagged bool) float64 { return raw.rate(routeDirect, name, tagged) }
	ratio := func(name string) string { return fmtRatio(raw.ratio(routeDirect, name)) }
	check := func(name, lead string) string {
		if c := raw.cell(routePgBouncer, name); c != nil && c.Check {
			return lead + checkCell(c.Untagged[0])
		}
		return ""
	}
	bouncer := raw.Bouncer
	if bouncer == "" {
		bouncer = "PgBouncer"
	}
	f := fmtFloat
	var b strings.Builder
	fmt.Fprintf(&b, "**Where the time goes.** reqpgx.Open tagged serves %s Fanouts/s, %s pgx defaults untagged (%s). "+
		"Untagged it serves %s (tagged / untagged %s), and pgx exec, which sends statements the same way, %s (%s): "+
		"the gap to pgx defaults is the exec mode, not the tag. Both send each statement as the unnamed statement, "+
		"which PostgreSQL parses and plans every time; pgx defaults untagged prepare each of the three texts once "+
		"per connection, and from then on only bind and execute. That saving is out of reach behind %s in "+
		"transaction mode, which cannot keep a named prepared statement on the server connection it was prepared "+
		"on (PgBouncer 1.21 added max_prepared_statements for this): the gap is the price of PgBouncer safety%s. "+
		"pgx defaults tagged lose %s (%s → %s Fanouts/s): "+
		"every tagged text is new to pgx's statement cache, so each statement is prepared in a round trip of its own "+
		"before it runs, and deallocated again when the cache evicts it.\n\n",
		f(rate("reqpgx.Open", true)), fmtRatio(rate("reqpgx.Open", true)/rate("pgx defaults", false)), f(rate("pgx defaults", false)),
		f(rate("reqpgx.Open", false)), ratio("reqpgx.Open"), f(rate("pgx exec", false)), ratio("pgx exec"),
		bouncer, check("pgx defaults", "; through it, pgx defaults untagged got "), fmtPct(1-rate("pgx defaults", true)/rate("pgx defaults", false)),
		f(rate("pgx defaults", false)), f(rate("pgx defaults", true)))
	fmt.Fprintf(&b, "lib/pq parses every statement anyway, so the tag costs it nothing measurable (tagged / untagged %s). Its "+
		"defaults send a statement with parameters in two round trips, and reqpool.OpenPostgres's binary_parameters "+
		"in one: tagged, %s lib/pq's defaults untagged. Through PgBouncer the second round trip of the defaults may "+
		"reach another server connection than the first, and lib/pq then reads another client's statement, or "+
		"none%s.", ratio("lib/pq defaults"), fmtRatio(rate("reqpool.OpenPostgres", true)/rate("lib/pq defaults", false)),
		check("lib/pq defaults", ": untagged, "))
	return b.String()
}
