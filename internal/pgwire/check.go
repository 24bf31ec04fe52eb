package pgwire

import (
	"context"
	"database/sql/driver"
	"strings"
	"sync/atomic"
)

// CheckingConnector is a driver.Connector that asks the backend of each new
// connection to watch its client socket while a statement runs
// (client_connection_check_interval = CheckInterval, sent as a startup
// parameter), so that a connection the client closes ends its statement on
// the server without a CancelRequest. Once the server refuses the parameter
// it connects without it from then on, at the cost of that one attempt:
// PgBouncer refuses any startup parameter it does not know ("unsupported
// startup parameter"), and PostgreSQL before 14 does not know this one.
// Through PgBouncer the backends are PgBouncer's, which the client's
// startup parameters never reach.
type CheckingConnector struct {
	With, Without driver.Connector // the same connector with and without the parameter
	// Refused reports whether a connection attempt failed because the
	// server refused a startup parameter; see RefusedParameter.
	Refused func(error) bool

	without atomic.Bool // the server refused the parameter: use Without
}

// Connect implements driver.Connector.
func (c *CheckingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if !c.without.Load() {
		conn, err := c.With.Connect(ctx)
		if err == nil || !c.Refused(err) {
			return conn, err
		}
		c.without.Store(true)
	}
	return c.Without.Connect(ctx)
}

// Driver implements driver.Connector.
func (c *CheckingConnector) Driver() driver.Driver { return c.Without.Driver() }

// CheckParameter is the startup parameter that CheckingConnector adds.
const CheckParameter = "client_connection_check_interval"

// RefusedParameter reports whether a server error, by its SQLSTATE code and
// message, refuses CheckParameter: PostgreSQL's 42704 (unrecognized
// configuration parameter) or PgBouncer's 08P01 "unsupported startup
// parameter".
func RefusedParameter(code, message string) bool {
	return (code == "42704" || code == "08P01") && strings.Contains(message, CheckParameter)
}

// ProbeQuery is what the openers ask each new connection, to learn what
// serves it: the backend's process id, which is the one in the
// connection's BackendKeyData only when it reaches PostgreSQL itself
// (PgBouncer makes up its own), and whether that backend checks its client
// socket. Through PgBouncer in transaction mode both answers are those of
// whichever server connection runs the query, so only the comparison
// counts.
const ProbeQuery = "SELECT pg_backend_pid(), coalesce(current_setting('client_connection_check_interval', true), '0')"
