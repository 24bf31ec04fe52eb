package reqpool

import (
	"context"
	"strings"
	"testing"
)

func TestAppendComment(t *testing.T) {
	for _, c := range []struct{ query, value, want string }{
		{"SELECT 1", "req-1", "SELECT 1 /*request_id='req-1'*/"},
		{"SELECT 1;", "req-1", "SELECT 1 /*request_id='req-1'*/;"},
		{"SELECT 1 ; \n", "a.b_c~d", "SELECT 1  /*request_id='a.b_c~d'*/;"},
		{"SELECT 1", "*/ DROP TABLE t; /*", "SELECT 1 /*request_id='%2A%2F%20DROP%20TABLE%20t%3B%20%2F%2A'*/"},
		{"SELECT 1", "it's\n\x00", "SELECT 1 /*request_id='it%27s%0A%00'*/"},
		{"SELECT 1 /* mine */", "req-1", "SELECT 1 /* mine */"},
		{"SELECT 1 -- mine", "req-1", "SELECT 1 -- mine"},
	} {
		if got := appendComment(c.query, "request_id", c.value); got != c.want {
			t.Errorf("appendComment(%q, %q) = %q, want %q", c.query, c.value, got, c.want)
		}
	}
}

func TestTagSQLFollowsConfig(t *testing.T) {
	on := newPool(t, Config{})
	ctx, release := on.newContext(context.Background(), "req-7")
	defer release()
	if got := TagSQL(ctx, "SELECT 1"); got != "SELECT 1 /*request_id='req-7'*/" {
		t.Errorf("tagging on: %q", got)
	}
	off := newPool(t, Config{DisableSQLComment: true})
	ctx, release = off.newContext(context.Background(), "req-7")
	defer release()
	if got := TagSQL(ctx, "SELECT 1"); got != "SELECT 1" {
		t.Errorf("tagging off: %q", got)
	}
	if got := TagSQL(context.Background(), "SELECT 1"); got != "SELECT 1" {
		t.Errorf("no handle: %q", got)
	}
}

// FuzzAppendComment: whatever the id, the statement keeps its text and gains
// exactly one comment that nothing in the id can end or nest.
func FuzzAppendComment(f *testing.F) {
	for _, s := range []string{"", "req-1", "*/", "/*", "'", "\x00", "\n", "%2A", strings.Repeat("*/", 5000)} {
		f.Add("SELECT $1::int;", s)
	}
	f.Fuzz(func(t *testing.T, query, value string) {
		got := appendComment(query, "request_id", value)
		if strings.Contains(query, "/*") || strings.Contains(query, "--") {
			if got != query {
				t.Fatalf("a commented statement was changed: %q", got)
			}
			return
		}
		i := strings.Index(got, " /*request_id='")
		if i < 0 {
			t.Fatalf("no comment in %q", got)
		}
		body := strings.TrimSuffix(strings.TrimRight(query, " \t\r\n"), ";")
		if got[:i] != body {
			t.Fatalf("statement changed: %q became %q", query, got)
		}
		comment := strings.TrimSuffix(got[i+len(" /*request_id='"):], ";")
		encoded, ok := strings.CutSuffix(comment, "'*/")
		if !ok {
			t.Fatalf("comment not closed where expected: %q", got)
		}
		for _, c := range encoded {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~-%", c) {
				t.Fatalf("id encoded as %q, with %q", encoded, c)
			}
		}
	})
}
