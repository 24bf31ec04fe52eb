package store

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/reqpool/reqpool"
)

// The dashboard's statements, each with one parameter, the org id. reqpool appends /*request_id='…'*/ to each
// statement, which is how pg_stat_activity ties a query to its HTTP request.
// Two rules follow, checked by the example's TestQueriesAreTagged:
//
//   - no comment inside a statement: reqpool leaves a statement that already
//     has one ("--" or "/*") untagged, as sqlcommenter asks;
//   - short statements: pg_stat_activity shows only the first
//     track_activity_query_size bytes (1024 by default) of a query, and the
//     tag comes last.
const (
	OrgSQL = `SELECT id, name, plan, created_at FROM orgs WHERE id = $1`

	UserCountSQL = `SELECT count(*) FROM users WHERE org_id = $1`

	OpenOrdersSQL = `SELECT count(*) AS count, COALESCE(sum(amount_cents), 0) AS amount_cents
FROM orders WHERE org_id = $1 AND state = 'open'`

	// Revenue of the current month and the 5 before it. The orders are
	// aggregated first and joined to the months afterwards, so that a month
	// without orders is still listed, and so that the planner does not
	// multiply its guess of 1000 rows for generate_series into the orders
	// scan (that plan costs enough to switch JIT on: 200 ms instead of 10).
	RevenueSQL = `SELECT to_char(m.month, 'YYYY-MM') AS month, COALESCE(r.orders, 0) AS orders, COALESCE(r.revenue_cents, 0) AS revenue_cents
FROM generate_series(date_trunc('month', now()) - interval '5 months', date_trunc('month', now()), interval '1 month') AS m (month)
LEFT JOIN (
	SELECT date_trunc('month', created_at) AS month, count(*) AS orders, sum(amount_cents) AS revenue_cents
	FROM orders
	WHERE org_id = $1 AND state IN ('paid', 'shipped') AND created_at >= date_trunc('month', now()) - interval '5 months'
	GROUP BY 1
) AS r USING (month)
ORDER BY m.month`

	RecentEventsSQL = `SELECT e.id, e.kind, e.created_at, e.user_id, u.name AS user_name
FROM events AS e JOIN users AS u ON u.id = e.user_id
WHERE e.org_id = $1
ORDER BY e.created_at DESC LIMIT 10`
)

// Org is a row of orgs.
type Org struct {
	ID        int64     `db:"id" json:"id"`
	Name      string    `db:"name" json:"name"`
	Plan      string    `db:"plan" json:"plan"`
	CreatedAt time.Time `db:"created_at" json:"created_at"`
}

// OrderTotals counts orders and adds up their amounts.
type OrderTotals struct {
	Count       int64 `db:"count" json:"count"`
	AmountCents int64 `db:"amount_cents" json:"amount_cents"`
}

// MonthRevenue is the revenue (paid and shipped orders) of one month.
type MonthRevenue struct {
	Month        string `db:"month" json:"month"` // YYYY-MM
	Orders       int64  `db:"orders" json:"orders"`
	RevenueCents int64  `db:"revenue_cents" json:"revenue_cents"`
}

// Event is a row of events, with the name of its user.
type Event struct {
	ID        int64     `db:"id" json:"id"`
	Kind      string    `db:"kind" json:"kind"`
	CreatedAt time.Time `db:"created_at" json:"created_at"`
	UserID    int64     `db:"user_id" json:"user_id"`
	UserName  string    `db:"user_name" json:"user_name"`
}

// Dashboard is the answer of GET /orgs/{id}/dashboard. Make one with
// NewDashboard and fill it with Queries or Funcs.
type Dashboard struct {
	Org          Org            `json:"org"`
	Users        int64          `json:"users"`
	OpenOrders   OrderTotals    `json:"open_orders"`
	Revenue      []MonthRevenue `json:"revenue_by_month"` // the last 6 months, oldest first
	RecentEvents []Event        `json:"recent_events"`    // the 10 most recent, newest first
}

// NewDashboard returns an empty Dashboard whose slices are not nil, so that
// an org without events is encoded as [] rather than null.
func NewDashboard() *Dashboard {
	return &Dashboard{Revenue: []MonthRevenue{}, RecentEvents: []Event{}}
}

// statement is one of the dashboard's queries: its SQL, where its result
// goes, and whether it returns one row (Get) or many (Select).
type statement struct {
	sql  string
	dest any
	one  bool
}

// statements lists the dashboard's five queries, filling d.
func (d *Dashboard) statements() []statement {
	return []statement{
		{OrgSQL, &d.Org, true},
		{UserCountSQL, &d.Users, true},
		{OpenOrdersSQL, &d.OpenOrders, true},
		{RevenueSQL, &d.Revenue, false},
		{RecentEventsSQL, &d.RecentEvents, false},
	}
}

// Queries returns the dashboard's five queries for org, for reqpool.Fanout:
// each fills its part of d, and carries the request id as a SQL comment. A
// missing org fails the first with an error matching sql.ErrNoRows.
func (d *Dashboard) Queries(db *sqlx.DB, org int64) []reqpool.Query {
	var qs []reqpool.Query
	for _, s := range d.statements() {
		if s.one {
			qs = append(qs, reqpool.Get(db, s.dest, s.sql, org))
		} else {
			qs = append(qs, reqpool.Select(db, s.dest, s.sql, org))
		}
	}
	return qs
}

// Funcs returns the same five queries as plain functions on sqlx, for pools
// other than reqpool (the benchmarks compare errgroup, a semaphore, pond and
// ants on them). Unlike Queries, they add no request-id comment.
func (d *Dashboard) Funcs(db *sqlx.DB, org int64) []func(context.Context) error {
	var fns []func(context.Context) error
	for _, s := range d.statements() {
		if s.one {
			fns = append(fns, func(ctx context.Context) error { return db.GetContext(ctx, s.dest, s.sql, org) })
		} else {
			fns = append(fns, func(ctx context.Context) error { return db.SelectContext(ctx, s.dest, s.sql, org) })
		}
	}
	return fns
}
