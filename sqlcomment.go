package reqpool

import (
	"context"
	"strings"
)

// TagSQL appends the request id of ctx's handle to query as a sqlcommenter
// comment, /*request_id='…'*/, before a trailing semicolon, so that the
// statement shows in pg_stat_activity and the server's logs with its HTTP
// request id. Select, Get, Exec and ExecResult call it; call it yourself for
// statements you run another way (a *sql.DB, pgx's own API). It leaves query
// alone when there is no handle, when tagging is off
// (Config.DisableSQLComment), or when query already has a comment, as
// sqlcommenter asks.
//
// The id is percent-encoded byte by byte, keeping only [A-Za-z0-9._~-], so
// nothing in it can end the comment, open a nested one (PostgreSQL nests /*
// comments) or otherwise change the SQL, whatever it contains.
func TagSQL(ctx context.Context, query string) string {
	h, ok := FromContext(ctx)
	if !ok || h.pool.cfg.DisableSQLComment {
		return query
	}
	return appendComment(query, "request_id", h.member.ID)
}

func appendComment(query, key, value string) string {
	if strings.Contains(query, "/*") || strings.Contains(query, "--") {
		return query
	}
	body := strings.TrimRight(query, " \t\r\n")
	semi := strings.HasSuffix(body, ";")
	body = strings.TrimSuffix(body, ";")

	var b strings.Builder
	b.Grow(len(body) + len(key) + 3*len(value) + 10)
	b.WriteString(body)
	b.WriteString(" /*")
	b.WriteString(key)
	b.WriteString("='")
	percentEncode(&b, value)
	b.WriteString("'*/")
	if semi {
		b.WriteByte(';')
	}
	return b.String()
}

// percentEncode writes s with every byte outside [A-Za-z0-9._~-] as %XX.
func percentEncode(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-' {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
}
