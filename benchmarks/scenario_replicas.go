package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/reqpool/reqpool"
	"github.com/reqpool/reqpool/examples/dashboard/store"
)

// Scenario 9, replicas behind one PgBouncer: three processes of the example
// app, each with its own pool, share one PgBouncer in transaction mode.
// What PostgreSQL sees under load (connections, statements at once), and
// whether a client's hang-up still stops its statements through PgBouncer.
// Then the same load on three replicas with too many Workers for
// PgBouncer's default_pool_size: how the answers and their latency fare.
func init() {
	register(Scenario{ID: 9, Name: "replicas", Title: "Replicas behind one PgBouncer", Run: runReplicas,
		Needs: []string{"DATABASE_URL", "PGBOUNCER_URL"}, NoContenders: true})
}

const (
	replicaCount   = 3
	replicaWorkers = 6
	// oversizedWorkers is the -workers of the second set of replicas:
	// replicaCount × oversizedWorkers = 48 statements at once, more than
	// the default_pool_size = 20 that scripts/with-postgres.sh gives
	// PgBouncer, so their transactions wait in PgBouncer.
	oversizedWorkers = 16
	// oversizedP99Goal bounds the oversized replicas' p99 latency of the
	// requests answered 200, as a multiple of the correctly sized ones'.
	oversizedP99Goal = 1.5
	replicaOrgs      = 50 // the example's seeded orgs: ids 1..50
	// reportQueries is how many statements GET /orgs/{id}/report runs.
	reportQueries = 4
	// samplePeriod is how often pg_stat_activity and SHOW POOLS are read.
	samplePeriod = 20 * time.Millisecond
	// hangUpGoal bounds the time from a hang-up until none of the
	// request's statements is active on the server.
	hangUpGoal = 500 * time.Millisecond
)

// replicasRaw is scenario 9's raw data.
type replicasRaw struct {
	Replicas, Workers, Clients int
	OversizedWorkers           int           // -workers of the second set of replicas
	Warm, Duration             time.Duration // of the load's warm-up, and of its measured part
	Server, Bouncer            string
	DefaultPoolSize            int // PgBouncer's, from SHOW CONFIG
	MaxConnections             int // PostgreSQL's
	Build                      time.Duration
	Start, OversizedStart      time.Duration // until each set of replicas answered
	Load                       replicasLoad  // on the replicas of Workers
	Oversized                  replicasLoad  // on the replicas of OversizedWorkers
	// P99Ratio is Oversized.P99 / Load.P99: the oversized replicas' p99
	// of the 200s against the correctly sized ones'.
	P99Ratio jsonFloat
	HangUps  []replicasHangUp // on the replicas of Workers
}

// replicasLoad is the closed-loop load and what the samplers saw during it.
// Every request counts in one of OK, Unavailable and Failed.
type replicasLoad struct {
	OK                  int       // answered 200 with a dashboard
	Unavailable         int       // answered 503
	Failed              int       // answered another status, or a 200 without a dashboard, or not answered
	PerReplica          []int     // 200 answers per replica
	ReqPerSec, P50, P99 jsonFloat // of the 200s
	FirstErr            string    `json:",omitempty"` // the first of Failed's errors
	replicasPeaks
}

// replicasPeaks is the most the samplers saw at once.
type replicasPeaks struct {
	Samples     int
	ServerConns int       // PgBouncer's connections in pg_stat_activity
	Active      int       // of those, executing a statement
	SvActive    int       // SHOW POOLS
	SvIdle      int       // SHOW POOLS
	ClWaiting   int       // SHOW POOLS
	MaxWaitMs   jsonFloat // SHOW POOLS maxwait
	SampleErr   string    `json:",omitempty"` // the first failed sample's error
}

// replicasHangUp is one hang-up through PgBouncer.
type replicasHangUp struct {
	ID     string
	Active jsonFloat // ms from sending the request until its statements were all active
	Gone   jsonFloat // ms from the hang-up until none was active; null if they outlived the wait
}

func runReplicas(ctx context.Context, env *Env) (*Section, error) {
	dsn, bouncer := os.Getenv("DATABASE_URL"), os.Getenv("PGBOUNCER_URL")
	raw, hangUps := newReplicasRaw(env)
	monitor, err := openMonitor(dsn)
	if err != nil {
		return nil, err
	}
	defer monitor.Close()
	monitor.SetMaxOpenConns(2) // the sampler's, and the hang-up's poller's
	admin, err := openBouncerAdmin(bouncer)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if err := raw.readSettings(ctx, dsn, bouncer, monitor, admin); err != nil {
		return nil, err
	}
	if err := ensureSchema(ctx, env, monitor); err != nil {
		return nil, err
	}

	tmp, err := os.MkdirTemp("", "reqpool-replicas-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	bin, err := buildDashboard(ctx, env, tmp)
	if err != nil {
		return nil, err
	}
	raw.Build = time.Since(start)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: raw.Clients}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	fleet := &replicaFleet{bin: bin, bouncer: bouncer, client: client, monitor: monitor, admin: admin}
	// Deferred, stop covers the paths that return early; measure stops
	// each set itself, and reports.
	defer func() {
		for _, e := range fleet.stop(ctx) {
			env.Logf("  replicas: %s", e)
		}
	}()
	exits, err := raw.measure(ctx, env, fleet, hangUps)
	if err != nil {
		return nil, err
	}
	// An unclean stop is a result, not only a log line.
	return replicasSection(&raw, exits), nil
}

// newReplicasRaw returns the raw data of a run of env, its sizes set but
// nothing measured, and how many hang-ups to run.
func newReplicasRaw(env *Env) (replicasRaw, int) {
	raw := replicasRaw{Replicas: replicaCount, Workers: replicaWorkers, OversizedWorkers: oversizedWorkers,
		Clients: 48, Warm: time.Second, Duration: 8 * time.Second}
	hangUps := min(env.reps(), 3)
	if env.Quick {
		raw.Clients, raw.Warm, raw.Duration, hangUps = 12, 100*time.Millisecond, 500*time.Millisecond, 1
	}
	return raw, hangUps
}

// ensureSchema loads the example's schema and seed data unless they are
// there: the replicas would load them on their first start, one at a time;
// loading them here keeps that out of their start-up.
func ensureSchema(ctx context.Context, env *Env, monitor *sqlx.DB) error {
	start := time.Now()
	loaded, err := store.Ensure(ctx, monitor, false)
	if err != nil {
		return err
	}
	if loaded {
		env.Logf("  replicas: schema and seed data loaded in %v", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// measure runs the scenario's two deployments on f, one after the other:
// replicas of raw.Workers take the load, then the hang-ups, and stop; then
// replicas of raw.OversizedWorkers take the same load, and stop. It returns
// what went wrong in the stops.
func (raw *replicasRaw) measure(ctx context.Context, env *Env, f *replicaFleet, hangUps int) ([]string, error) {
	var err error
	if raw.Start, err = f.start(ctx, raw.Workers); err != nil {
		return nil, err
	}
	env.Logf("  replicas: built in %v, %d replicas of %d Workers answering in %v", raw.Build.Round(time.Millisecond),
		replicaCount, raw.Workers, raw.Start.Round(time.Millisecond))
	if raw.Load, err = f.load(ctx, raw.Clients, raw.Warm, raw.Duration); err != nil {
		return nil, err
	}
	env.Logf("  replicas: load done, %s", raw.Load.summary())
	if raw.HangUps, err = f.hangUps(ctx, hangUps); err != nil {
		return nil, err
	}
	exits := f.stop(ctx)

	if raw.OversizedStart, err = f.start(ctx, raw.OversizedWorkers); err != nil {
		return nil, err
	}
	env.Logf("  replicas: %d replicas of %d Workers answering in %v", replicaCount, raw.OversizedWorkers,
		raw.OversizedStart.Round(time.Millisecond))
	if raw.Oversized, err = f.load(ctx, raw.Clients, raw.Warm, raw.Duration); err != nil {
		return nil, err
	}
	raw.P99Ratio = jsonFloat(float64(raw.Oversized.P99) / float64(raw.Load.P99))
	env.Logf("  replicas: oversized load done, %s; p99 %s of the correctly sized", raw.Oversized.summary(),
		fmtRatio(float64(raw.P99Ratio)))
	return append(exits, f.stop(ctx)...), nil
}

// summary formats the load's answers and latencies for the progress log.
func (l *replicasLoad) summary() string {
	return fmt.Sprintf("%s req/s; %d answered 200, %d 503, %d other failures; p50 %s ms, p99 %s ms",
		fmtFloat(float64(l.ReqPerSec)), l.OK, l.Unavailable, l.Failed, fmtMs(float64(l.P50)), fmtMs(float64(l.P99)))
}

// replicaFleet is one set of replicas of the example app at a time, all
// of the same Workers, behind one PgBouncer, with what loads, samples and
// stops them.
type replicaFleet struct {
	bin      string // the app's binary
	bouncer  string // PGBOUNCER_URL, the replicas' -db
	client   *http.Client
	monitor  *sqlx.DB // a direct connection to PostgreSQL
	admin    *bouncerAdmin
	workers  int        // the running replicas' -workers
	replicas []*replica // those started and not yet stopped
}

// start starts replicaCount replicas with -workers workers, waits until
// each answers a first dashboard, and returns how long that took. The
// replicas are f's to stop, even when start fails.
func (f *replicaFleet) start(ctx context.Context, workers int) (time.Duration, error) {
	start := time.Now()
	f.workers = workers
	for range replicaCount {
		r, err := startReplica(f.bin, "-db", f.bouncer, "-workers", strconv.Itoa(workers))
		if err != nil {
			return 0, err
		}
		f.replicas = append(f.replicas, r)
	}
	for i, r := range f.replicas {
		if err := r.ready(ctx, time.Minute); err != nil {
			return 0, fmt.Errorf("replica %d of %d Workers: %w", i+1, workers, err)
		}
		if err := replicaDashboard(ctx, f.client, r.URL, 1); err != nil {
			return 0, fmt.Errorf("replica %d of %d Workers: first request: %w", i+1, workers, err)
		}
	}
	return time.Since(start), nil
}

// stop stops the replicas once their work and PgBouncer's cancels are
// done, and returns what went wrong; it does nothing when none runs.
func (f *replicaFleet) stop(ctx context.Context) []string {
	if len(f.replicas) == 0 {
		return nil
	}
	var errs []string
	if err := quiesce(ctx, f.client, f.replicas, f.admin, 5*time.Second); err != nil {
		errs = append(errs, fmt.Sprintf("%d Workers: %v", f.workers, err))
	}
	// A connection that the client dialled but never sent a request
	// on holds a replica's graceful shutdown for 5 s.
	f.client.CloseIdleConnections()
	for i, r := range f.replicas {
		if err := r.Stop(); err != nil {
			errs = append(errs, fmt.Sprintf("%d Workers, replica %d: %v", f.workers, i+1, err))
		}
	}
	f.replicas = nil
	return errs
}

// load drives the running replicas with n closed-loop clients; see
// replicasLoadRun.
func (f *replicaFleet) load(ctx context.Context, n int, warm, dur time.Duration) (replicasLoad, error) {
	return replicasLoadRun(ctx, f.client, f.replicas, f.monitor, f.admin, n, warm, dur)
}

// hangUps runs n hang-ups on the second replica, one at a time, each once
// the replicas and PgBouncer are quiet again.
func (f *replicaFleet) hangUps(ctx context.Context, n int) ([]replicasHangUp, error) {
	var out []replicasHangUp
	for i := range n {
		h, err := replicasHangUpRun(ctx, f.client, f.replicas[1].URL, f.monitor, fmt.Sprintf("replicas-hangup-%d-%d", time.Now().Unix(), i+1))
		if err != nil {
			return out, err
		}
		out = append(out, h)
		if err := quiesce(ctx, f.client, f.replicas, f.admin, 5*time.Second); err != nil {
			return out, err
		}
	}
	return out, nil
}

// readSettings reads the versions and the limits that the section reports:
// PostgreSQL's max_connections, PgBouncer's default_pool_size.
func (raw *replicasRaw) readSettings(ctx context.Context, dsn, bouncer string, monitor *sqlx.DB, admin *bouncerAdmin) error {
	var err error
	if raw.Server, raw.Bouncer, err = pgVersions(ctx, dsn, bouncer); err != nil {
		return err
	}
	if err := monitor.GetContext(ctx, &raw.MaxConnections, `SELECT current_setting('max_connections')::int`); err != nil {
		return err
	}
	size, err := admin.setting(ctx, "default_pool_size")
	if err != nil {
		return err
	}
	if raw.DefaultPoolSize, err = strconv.Atoi(size); err != nil {
		return fmt.Errorf("PgBouncer default_pool_size %q: %w", size, err)
	}
	return nil
}

// buildDashboard builds the example app (examples/dashboard) into dir and
// returns the binary's path.
func buildDashboard(ctx context.Context, env *Env, dir string) (string, error) {
	bin := filepath.Join(dir, "dashboard")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(env.Dir, "..", "examples", "dashboard")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build examples/dashboard: %w\n%s", err, out)
	}
	return bin, nil
}

// quiesce waits until every replica's pool is idle, then until PgBouncer
// has had no cancel request under way for a while (see awaitNoCancels),
// so that a replica can be stopped, or a new hang-up start.
func quiesce(ctx context.Context, client *http.Client, replicas []*replica, admin *bouncerAdmin, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		busy, err := busyness(ctx, client, replicas)
		if err != nil {
			return err
		}
		if busy == "" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still busy %v after the last request: %s", timeout, busy)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return admin.awaitNoCancels(ctx, 100*time.Millisecond, time.Until(deadline))
}

// busyness says what is still under way in the replicas' pools (GET
// /stats); empty when nothing is.
func busyness(ctx context.Context, client *http.Client, replicas []*replica) (string, error) {
	for i, r := range replicas {
		if r.URL == "" { // never listened
			continue
		}
		var st struct {
			Pool struct{ Running, Queued, Requests int }
		}
		if err := getJSON(ctx, client, r.URL+"/stats", &st); err != nil {
			return "", fmt.Errorf("replica %d: %w", i+1, err)
		}
		if p := st.Pool; p.Running+p.Queued+p.Requests > 0 {
			return fmt.Sprintf("replica %d has %d requests, %d queries running, %d queued", i+1, p.Requests, p.Running, p.Queued), nil
		}
	}
	return "", nil
}

// replicaDashboard fetches the dashboard of org from the replica at base
// and checks that it is one.
func replicaDashboard(ctx context.Context, client *http.Client, base string, org int) error {
	var d store.Dashboard
	return getJSON(ctx, client, fmt.Sprintf("%s/orgs/%d/dashboard", base, org), &d)
}

// replicasLoadRun drives the replicas with n closed-loop clients for warm,
// then for dur while sampling the server and PgBouncer: the warm-up has
// PgBouncer open (or check) its server connections first.
func replicasLoadRun(ctx context.Context, client *http.Client, replicas []*replica, monitor *sqlx.DB, admin *bouncerAdmin, n int, warm, dur time.Duration) (replicasLoad, error) {
	driveReplicas(ctx, client, replicas, n, warm)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	var peaks replicasPeaks
	go func() {
		defer close(sampled)
		sampleLoad(ctx, monitor, admin, &peaks, stop)
	}()
	load := driveReplicas(ctx, client, replicas, n, dur)
	close(stop)
	<-sampled
	load.replicasPeaks = peaks
	return load, ctx.Err()
}

// driveReplicas runs n closed-loop clients for dur, client i on replica i
// modulo their number, each asking for the dashboard of a random org.
func driveReplicas(ctx context.Context, client *http.Client, replicas []*replica, n int, dur time.Duration) replicasLoad {
	load := replicasLoad{PerReplica: make([]int, len(replicas))}
	var (
		mu  sync.Mutex
		all loadTally
		wg  sync.WaitGroup
	)
	deadline := time.Now().Add(dur)
	began := time.Now()
	for i := range n {
		wg.Go(func() {
			r := i % len(replicas)
			t := driveClient(ctx, client, replicas[r].URL, rand.New(rand.NewPCG(uint64(i), 9)), deadline)
			mu.Lock()
			defer mu.Unlock()
			load.PerReplica[r] += len(t.lats)
			all.add(t)
		})
	}
	wg.Wait()
	load.OK, load.Unavailable, load.Failed = len(all.lats), all.unavailable, all.failed
	if all.firstErr != nil {
		load.FirstErr = all.firstErr.Error()
	}
	load.ReqPerSec = jsonFloat(float64(len(all.lats)) / time.Since(began).Seconds())
	load.P50, load.P99 = jsonFloat(percentile(all.lats, 50)), jsonFloat(percentile(all.lats, 99))
	return load
}

// loadTally is what one closed-loop client, or several, got back.
type loadTally struct {
	lats        []float64 // ms, of the requests answered 200
	unavailable int       // requests answered 503
	failed      int       // the other requests
	firstErr    error     // the first of failed's errors
}

// add adds o's requests to t's; t's first error stays first.
func (t *loadTally) add(o loadTally) {
	t.lats = append(t.lats, o.lats...)
	t.unavailable += o.unavailable
	t.failed += o.failed
	if t.firstErr == nil {
		t.firstErr = o.firstErr
	}
}

// driveClient asks the replica at base, one request after the other until
// deadline, for the dashboard of an org drawn from rng, and tallies the
// answers. A 503 is asked again at once, as any other answer is.
func driveClient(ctx context.Context, client *http.Client, base string, rng *rand.Rand, deadline time.Time) loadTally {
	var t loadTally
	for time.Now().Before(deadline) && ctx.Err() == nil {
		t0 := time.Now()
		status, err := fetchDashboard(ctx, client, base, 1+rng.IntN(replicaOrgs))
		switch {
		case err != nil:
			t.failed++
			if t.firstErr == nil {
				t.firstErr = err
			}
		case status == http.StatusServiceUnavailable:
			t.unavailable++
		default:
			t.lats = append(t.lats, ms(time.Since(t0)))
		}
	}
	return t
}

// fetchDashboard asks the replica at base for the dashboard of org and
// returns the answer's status. The error is nil for a 200 whose body is a
// dashboard and for a 503 (the app's refusal: overloaded, shutting down or
// database unavailable); it says what went wrong for any other answer, or
// for none.
func fetchDashboard(ctx context.Context, client *http.Client, base string, org int) (int, error) {
	url := fmt.Sprintf("%s/orgs/%d/dashboard", base, org)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// Read to the end, so that the connection serves the next request.
	defer io.Copy(io.Discard, resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		var d store.Dashboard
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			return resp.StatusCode, fmt.Errorf("GET %s: 200, decode: %w", url, err)
		}
		return resp.StatusCode, nil
	case http.StatusServiceUnavailable:
		return resp.StatusCode, nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	return resp.StatusCode, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
}

// serverConnsQuery counts the client backends on the database whose
// process ids are in $1, PgBouncer's server connections (SHOW SERVERS), and
// those of them executing a statement. Other clients of the same server
// (the harness's monitor, tests running beside) are left out.
const serverConnsQuery = `SELECT count(*), count(*) FILTER (WHERE state = 'active')
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND datname = current_database() AND pid = ANY($1)`

// sampleLoad reads pg_stat_activity and SHOW POOLS every samplePeriod
// until stop is closed, keeping the peaks in p.
func sampleLoad(ctx context.Context, monitor *sqlx.DB, admin *bouncerAdmin, p *replicasPeaks, stop <-chan struct{}) {
	tick := time.NewTicker(samplePeriod)
	defer tick.Stop()
	fail := func(err error) {
		if p.SampleErr == "" && ctx.Err() == nil {
			p.SampleErr = err.Error()
		}
	}
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pids, err := admin.serverPIDs(ctx)
		if err != nil {
			fail(err)
			continue
		}
		var conns, active int
		if err := monitor.QueryRowContext(ctx, serverConnsQuery, pq.Array(pids)).Scan(&conns, &active); err != nil {
			fail(err)
			continue
		}
		pool, err := admin.pool(ctx)
		if err != nil {
			fail(err)
			continue
		}
		p.Samples++
		p.ServerConns, p.Active = max(p.ServerConns, conns), max(p.Active, active)
		p.SvActive, p.SvIdle, p.ClWaiting = max(p.SvActive, pool.SvActive), max(p.SvIdle, pool.SvIdle), max(p.ClWaiting, pool.ClWaiting)
		p.MaxWaitMs = jsonFloat(max(float64(p.MaxWaitMs), pool.MaxWaitMs))
	}
}

// replicasHangUpRun asks the replica at base for a slow report as request
// id, waits until its statements are all active on the server, hangs up,
// and measures how long until none is.
func replicasHangUpRun(ctx context.Context, client *http.Client, base string, monitor *sqlx.DB, id string) (replicasHangUp, error) {
	h := replicasHangUp{ID: id, Gone: jsonFloat(math.NaN())}
	active := func() (int, error) {
		var n int
		err := monitor.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()`, "/*request_id='"+id+"'*/")
		return n, err
	}
	// poll waits until active() satisfies ok, for at most limit, and returns
	// how long that took; ok is false if it never did.
	poll := func(ok func(int) bool, limit time.Duration) (time.Duration, bool, error) {
		start := time.Now()
		for time.Since(start) < limit {
			n, err := active()
			if err != nil {
				return 0, false, err
			}
			if ok(n) {
				return time.Since(start), true, nil
			}
			time.Sleep(2 * time.Millisecond)
		}
		return 0, false, nil
	}

	rctx, hangUp := context.WithCancel(ctx)
	defer hangUp()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, base+"/orgs/1/report?sleep=30", nil)
	if err != nil {
		return h, err
	}
	req.Header.Set(reqpool.RequestIDHeader, id)
	answered := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("answered %s before the hang-up", resp.Status)
		}
		answered <- err
	}()
	took, ok, err := poll(func(n int) bool { return n == reportQueries }, 10*time.Second)
	if err != nil || !ok {
		hangUp()
		<-answered
		return h, fmt.Errorf("hang-up %s: %d statements never active at once within 10 s (%v)", id, reportQueries, err)
	}
	h.Active = jsonFloat(ms(took))
	hangUp()
	if took, ok, err = poll(func(n int) bool { return n == 0 }, 5*time.Second); err != nil {
		return h, err
	} else if ok {
		h.Gone = jsonFloat(ms(took))
	}
	if err := <-answered; !errors.Is(err, context.Canceled) {
		return h, fmt.Errorf("hang-up %s: the client's request ended with %v, not its cancellation", id, err)
	}
	return h, nil
}

// replicasSection builds the report section. exits lists the replicas
// that did not stop cleanly.
func replicasSection(raw *replicasRaw, exits []string) *Section {
	hang, worst := replicasHangUpTable(raw)
	s := &Section{
		Setup:  replicasSetup(raw),
		Tables: []Table{replicasLoadTable(raw), replicasPeaksTable(raw), hang},
		Raw:    raw,
	}
	s.Goals = []Goal{
		{
			Goal: fmt.Sprintf("through PgBouncer, a hang-up's statements leave the server within %s", hangUpGoal),
			Measured: fmt.Sprintf("worst of %d: %s ms (%s)", len(raw.HangUps), goneCell(jsonFloat(worst)),
				strings.Join(hang.column(2), ", ")),
			Met: worst < ms(hangUpGoal),
			Note: "The cancel goes to PgBouncer, which forwards it to the server connection running the statement: a " +
				"statement still active past the goal means that a CancelRequest was lost or came too early, and was not chased.",
		},
		raw.sizedGoal(),
		raw.oversizedGoal(),
	}
	s.Notes = append(s.Notes, replicasSizing(raw))
	for i, l := range []*replicasLoad{&raw.Load, &raw.Oversized} {
		if l.SampleErr != "" {
			w := []int{raw.Workers, raw.OversizedWorkers}[i]
			s.Notes = append(s.Notes, fmt.Sprintf("A sample failed (%s): %s", raw.deployment(w), l.SampleErr))
		}
	}
	if len(exits) > 0 {
		s.Notes = append(s.Notes, "**Replicas that did not stop cleanly:** "+strings.Join(exits, "; "))
	}
	return s
}

// replicasSetup is the section's description of the run.
func replicasSetup(raw *replicasRaw) string {
	return fmt.Sprintf("Three processes of the example app (`examples/dashboard`, built with `go build`), each "+
		"started as `dashboard -addr 127.0.0.1:0 -db $PGBOUNCER_URL -workers %d`: one reqpool pool of %d Workers per "+
		"process, each opening the database with `reqpool.OpenPostgres` (lib/pq, sized to Workers + 2 connections), "+
		"all through one %s in transaction mode in front of %s. %d clients, spread round-robin over the replicas, "+
		"ask in a closed loop for `GET /orgs/{id}/dashboard` (5 queries) of a random org among %d: %s of warm-up, "+
		"then %s measured. A request counts as answered 200 (with a dashboard), answered 503 (the app's refusal), "+
		"or failed (any other answer, or none); a client asks again at once whatever the answer, and latencies are "+
		"of the 200s. Meanwhile a sampler reads, every %s, PgBouncer's `SHOW SERVERS` and `SHOW POOLS` on its "+
		"admin console and, on a direct connection, `pg_stat_activity`: the client backends of the database whose pid "+
		"is one of PgBouncer's server connections (so that other clients of the same server do not count), and how "+
		"many of them are active. Then, %s, a client asks replica 2 for a report whose 4 statements sleep "+
		"30 s, with an `X-Request-ID` of its own; once all 4 are active in `pg_stat_activity` (found by "+
		"`/*request_id='…'*/` in `query`), it hangs up, and a poller measures how long until none is active. Once "+
		"the replicas are idle and PgBouncer has no cancel request under way, they stop with SIGTERM, and three more "+
		"start with `-workers %d` instead: %s, an oversized deployment, which take the same load, sampled the same "+
		"way, and stop the same way. Building the app took %s, starting the first three %s, the other three %s.",
		raw.Workers, raw.Workers, raw.Bouncer, raw.Server, raw.Clients, replicaOrgs, raw.Warm, raw.Duration, samplePeriod,
		times(len(raw.HangUps)), raw.OversizedWorkers, raw.statements(raw.OversizedWorkers),
		raw.Build.Round(100*time.Millisecond), raw.Start.Round(10*time.Millisecond), raw.OversizedStart.Round(10*time.Millisecond))
}

// statements formats the statements that replicas of workers Workers run
// at once, at most, against PgBouncer's default_pool_size: "3 × 6 = 18 ≤ 20".
func (raw *replicasRaw) statements(workers int) string {
	n, rel := raw.Replicas*workers, "≤"
	if n > raw.DefaultPoolSize {
		rel = ">"
	}
	return fmt.Sprintf("%d × %d = %d %s %d", raw.Replicas, workers, n, rel, raw.DefaultPoolSize)
}

// deployment names the replicas of workers Workers in a table's column or
// a goal: "3 × 6 Workers".
func (raw *replicasRaw) deployment(workers int) string {
	return fmt.Sprintf("%d × %d Workers", raw.Replicas, workers)
}

// sizing names the replicas of workers Workers in a table's row, with how
// they compare to PgBouncer's default_pool_size: "3 × 6 Workers (18 ≤ 20:
// correctly sized)".
func (raw *replicasRaw) sizing(workers int) string {
	n := raw.Replicas * workers
	if n > raw.DefaultPoolSize {
		return fmt.Sprintf("%s (%d > %d: oversized)", raw.deployment(workers), n, raw.DefaultPoolSize)
	}
	return fmt.Sprintf("%s (%d ≤ %d: correctly sized)", raw.deployment(workers), n, raw.DefaultPoolSize)
}

// replicasLoadTable is the answers and latencies of both deployments, side
// by side.
func replicasLoadTable(raw *replicasRaw) Table {
	t := Table{
		Caption: fmt.Sprintf("Closed-loop load, %d clients for %s, on each set of replicas (PgBouncer default_pool_size = %d; "+
			"latencies of the requests answered 200):", raw.Clients, raw.Duration, raw.DefaultPoolSize),
		Header: []string{"replicas × Workers (vs default_pool_size)", "answered 200", "answered 503",
			"other failures", "req/s (200s)", "p50 (ms)", "p99 (ms)", "p99 / correctly sized p99"},
	}
	for _, d := range []struct {
		workers int
		load    *replicasLoad
		ratio   float64
	}{{raw.Workers, &raw.Load, 1}, {raw.OversizedWorkers, &raw.Oversized, float64(raw.P99Ratio)}} {
		l := d.load
		t.Rows = append(t.Rows, []string{raw.sizing(d.workers),
			fmtInt(int64(l.OK)), fmtInt(int64(l.Unavailable)), fmtInt(int64(l.Failed)), fmtFloat(float64(l.ReqPerSec)),
			fmtMs(float64(l.P50)), fmtMs(float64(l.P99)), fmtRatio(d.ratio)})
	}
	return t
}

// replicasPeaksTable is what the samplers saw during each deployment's
// load, with the limits to read it against.
func replicasPeaksTable(raw *replicasRaw) Table {
	a, b := &raw.Load, &raw.Oversized
	row := func(measure string, f func(l *replicasLoad, workers int) string) []string {
		return []string{measure, f(a, raw.Workers), f(b, raw.OversizedWorkers)}
	}
	return Table{
		Caption: fmt.Sprintf("What PostgreSQL and PgBouncer saw during the load (sampled every %s):", samplePeriod),
		Header:  []string{"measure", raw.deployment(raw.Workers), raw.deployment(raw.OversizedWorkers)},
		Rows: [][]string{
			row("requests answered 200 per replica", func(l *replicasLoad, _ int) string { return perReplica(l.PerReplica) }),
			row("peak server connections from PgBouncer (pg_stat_activity)", func(l *replicasLoad, _ int) string { return strconv.Itoa(l.ServerConns) }),
			row("PgBouncer default_pool_size", func(*replicasLoad, int) string { return strconv.Itoa(raw.DefaultPoolSize) }),
			row("peak statements active on the server (sampled)", func(l *replicasLoad, _ int) string { return strconv.Itoa(l.Active) }),
			row("replicas × Workers", func(_ *replicasLoad, w int) string { return strconv.Itoa(raw.Replicas * w) }),
			row("peak sv_active / sv_idle (SHOW POOLS)", func(l *replicasLoad, _ int) string { return fmt.Sprintf("%d / %d", l.SvActive, l.SvIdle) }),
			row("peak cl_waiting, maxwait (ms)", func(l *replicasLoad, _ int) string {
				return fmt.Sprintf("%d, %s", l.ClWaiting, fmtMs(float64(l.MaxWaitMs)))
			}),
			row("client connections to PgBouncer, at most: replicas × (Workers + 2)", func(_ *replicasLoad, w int) string {
				return strconv.Itoa(raw.Replicas * (w + reqpool.SpareConns))
			}),
			row("PostgreSQL max_connections", func(*replicasLoad, int) string { return strconv.Itoa(raw.MaxConnections) }),
			row("samples", func(l *replicasLoad, _ int) string { return fmtInt(int64(l.Samples)) }),
		},
	}
}

// replicasHangUpTable is the hang-ups' table, and the worst time until a
// hang-up's statements left the server (+Inf if some outlived the wait).
func replicasHangUpTable(raw *replicasRaw) (Table, float64) {
	hang := Table{
		Caption: fmt.Sprintf("Hang-ups through PgBouncer, `GET /orgs/1/report?sleep=30` on replica 2 of the replicas "+
			"of %d Workers:", raw.Workers),
		Header: []string{"request id", "all 4 statements active after (ms)", "none active after the hang-up (ms)"},
	}
	var gone []float64
	for _, h := range raw.HangUps {
		g := float64(h.Gone)
		if math.IsNaN(g) {
			g = math.Inf(1)
		}
		gone = append(gone, g)
		hang.Rows = append(hang.Rows, []string{"`" + h.ID + "`", fmtMs(float64(h.Active)), goneCell(h.Gone)})
	}
	return hang, maxOf(gone)
}

// sizedGoal is the goal of the correctly sized replicas' load: every
// request answered 200, and no more statements at once than their Workers.
func (raw *replicasRaw) sizedGoal() Goal {
	l, bound := &raw.Load, raw.Replicas*raw.Workers
	return Goal{
		Goal: fmt.Sprintf("%d replicas of %d Workers under load: every request answered 200, at most replicas × "+
			"Workers statements at once", raw.Replicas, raw.Workers),
		Measured: fmt.Sprintf("%s of %s not answered 200 (%s 503, %s other failures); peak %d statements active (bound %d)",
			fmtInt(int64(l.Unavailable+l.Failed)), fmtInt(int64(l.OK+l.Unavailable+l.Failed)), fmtInt(int64(l.Unavailable)),
			fmtInt(int64(l.Failed)), l.Active, bound),
		Met:  l.Failed == 0 && l.Unavailable == 0 && l.Active <= bound,
		Note: l.failureNote(),
	}
}

// oversizedGoal is the goal of the oversized replicas' load: every request
// of both loads answered 200 or 503, and the oversized replicas' p99 of
// the 200s within oversizedP99Goal of the correctly sized ones'.
func (raw *replicasRaw) oversizedGoal() Goal {
	a, b, ratio := &raw.Load, &raw.Oversized, float64(raw.P99Ratio)
	g := Goal{
		Goal: fmt.Sprintf("%d replicas of %d Workers (%d statements at once, more than default_pool_size = %d) "+
			"under the same load: every request of both loads answered 200 or 503, p99 of the 200s within %.1f× that "+
			"of %d replicas of %d Workers", raw.Replicas, raw.OversizedWorkers, raw.Replicas*raw.OversizedWorkers,
			raw.DefaultPoolSize, oversizedP99Goal, raw.Replicas, raw.Workers),
		Measured: fmt.Sprintf("%s: %s; %s: %s; p99 ratio %s", raw.deployment(raw.Workers), a.answers(),
			raw.deployment(raw.OversizedWorkers), b.answers(), fmtRatio(ratio)),
		Met: a.Failed == 0 && b.Failed == 0 && ratio <= oversizedP99Goal,
	}
	g.Note = fmt.Sprintf("With %s, transactions wait in PgBouncer for a server connection (peak cl_waiting %d, "+
		"maxwait %s ms), outside reqpool's order: a request's queries no longer start together.",
		raw.statements(raw.OversizedWorkers), b.ClWaiting, fmtMs(float64(b.MaxWaitMs)))
	if n := b.failureNote(); n != "" {
		g.Note += " " + n
	}
	return g
}

// answers formats the load's answers and p99 for a goal: "8,874 answered
// 200, 0 503, 0 other failures, p99 77.7 ms".
func (l *replicasLoad) answers() string {
	return fmt.Sprintf("%s answered 200, %s 503, %s other failures, p99 %s ms", fmtInt(int64(l.OK)),
		fmtInt(int64(l.Unavailable)), fmtInt(int64(l.Failed)), fmtMs(float64(l.P99)))
}

// failureNote says what went wrong with the load's requests, if anything.
func (l *replicasLoad) failureNote() string {
	var parts []string
	if l.Unavailable > 0 {
		parts = append(parts, fmt.Sprintf("%s requests answered 503.", fmtInt(int64(l.Unavailable))))
	}
	if l.FirstErr != "" {
		parts = append(parts, "First other failure: "+l.FirstErr)
	}
	return strings.Join(parts, " ")
}

// replicasSizing is the section's sizing paragraph, with the run's
// numbers.
func replicasSizing(raw *replicasRaw) string {
	l, statements := raw.Load, raw.Replicas*raw.Workers
	return fmt.Sprintf("**Sizing.** Each replica's `database/sql` pool holds at most Workers + %d spare = %d connections "+
		"to PgBouncer, so %d replicas hold at most %d × (%d + %d) = %d client connections. PgBouncer runs their "+
		"transactions on at most default_pool_size = %d server connections (per database and user; peak seen here: %d), "+
		"and those are all that PostgreSQL sees of the replicas, against max_connections = %d: more replicas add client "+
		"connections to PgBouncer, not to the server. At most %d × %d = %d statements of Fanouts run at once, since each "+
		"replica's pool runs at most Workers (peak seen active: %d); %s. %s With more "+
		"replicas, keep replicas × Workers ≤ default_pool_size, or transactions queue in PgBouncer, outside reqpool's "+
		"order and its cancellation of queued work; raise default_pool_size within max_connections, less "+
		"superuser_reserved_connections and the server's other clients.",
		reqpool.SpareConns, raw.Workers+reqpool.SpareConns, raw.Replicas, raw.Replicas, raw.Workers, reqpool.SpareConns,
		raw.Replicas*(raw.Workers+reqpool.SpareConns), raw.DefaultPoolSize, l.ServerConns, raw.MaxConnections,
		raw.Replicas, raw.Workers, statements, l.Active, raw.waitClause(raw.Workers, &l), raw.oversizedSizing())
}

// waitClause says whether replicas of workers Workers may wait in
// PgBouncer for a server connection, and how much l's load did.
func (raw *replicasRaw) waitClause(workers int, l *replicasLoad) string {
	n := raw.Replicas * workers
	wait := fmt.Sprintf("%d ≤ %d, so they need not wait in PgBouncer for a server connection", n, raw.DefaultPoolSize)
	if n > raw.DefaultPoolSize {
		wait = fmt.Sprintf("%d > %d, so at full load some wait in PgBouncer for a server connection", n, raw.DefaultPoolSize)
	}
	return fmt.Sprintf("%s (peak cl_waiting %d, maxwait %s ms)", wait, l.ClWaiting, fmtMs(float64(l.MaxWaitMs)))
}

// oversizedSizing is the sizing paragraph's sentences on the oversized
// replicas.
func (raw *replicasRaw) oversizedSizing() string {
	l, w := &raw.Oversized, raw.OversizedWorkers
	return fmt.Sprintf("The oversized replicas, %d Workers each, hold up to %d × (%d + %d) = %d client connections "+
		"and run up to %d × %d = %d statements at once: %s; PgBouncer opened at most %d server connections, and "+
		"the server saw at most %d statements active. Their p99 of the 200s was %s ms, %s that of the replicas of %d Workers "+
		"(goal: at most %.1f×), with %s requests answered 503 and %s other failures.",
		w, raw.Replicas, w, reqpool.SpareConns, raw.Replicas*(w+reqpool.SpareConns), raw.Replicas, w, raw.Replicas*w,
		raw.waitClause(w, l), l.ServerConns, l.Active, fmtMs(float64(l.P99)), fmtRatio(float64(raw.P99Ratio)), raw.Workers,
		oversizedP99Goal, fmtInt(int64(l.Unavailable)), fmtInt(int64(l.Failed)))
}

// perReplica formats counts as "2,320 / 2,282 / 2,196".
func perReplica(counts []int) string {
	var parts []string
	for _, n := range counts {
		parts = append(parts, fmtInt(int64(n)))
	}
	return strings.Join(parts, " / ")
}

// times formats n as "once", "twice", "3 times".
func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return strconv.Itoa(n) + " times"
}

// goneCell formats the time until a hang-up's statements left the server.
func goneCell(v jsonFloat) string {
	if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		return "still active after 5 s"
	}
	return fmtMs(float64(v))
}

// column returns the cells of column i of t.
func (t Table) column(i int) []string {
	var out []string
	for _, r := range t.Rows {
		out = append(out, r[i])
	}
	return out
}
