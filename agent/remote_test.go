package agent

import (
	"testing"
	"time"
)

// A token stepped up through one SSH connection is handed only to callers
// of that connection: never to a local caller, nor another connection;
// a local token never to a remote caller. resetState through a connection
// revokes only that connection's tokens.
func TestTokenStoreRemoteSeparation(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	p, _ := testPersister(t)
	s := newTokenStore(p)
	const a, b = "ssh build-01 (pid 10) started 5", "ssh build-02 (pid 11) started 6"
	s.add(&held{JTI: "local", Scopes: []string{"x"}, ExpiresAt: now.Add(time.Minute)})
	s.add(&held{JTI: "ra", Scopes: []string{"x", "y"}, ExpiresAt: now.Add(time.Hour), Remote: a})
	for _, tc := range []struct{ scope, caller, want string }{
		{"x", "", "local"},
		{"y", "", ""},
		{"x", a, "ra"},
		{"y", a, "ra"},
		{"x", b, ""},
		{"x", "ssh build-01 (pid 10) started 7", ""}, // a later ssh with a reused pid
	} {
		got := ""
		if h := s.best(tc.scope, now, tc.caller); h != nil {
			got = h.JTI
		}
		if got != tc.want {
			t.Errorf("best(%s) for %q = %q, want %q", tc.scope, tc.caller, got, tc.want)
		}
	}
	if n := s.revokeOf(b, nil); n != 0 {
		t.Fatalf("a reset through another connection revoked %d tokens", n)
	}
	if n := s.revokeOf(a, []string{"y"}); n != 1 || s.get("ra") != nil || s.get("local") == nil {
		t.Fatalf("a reset through the connection revoked %d, and ra held %v, local held %v", n, s.get("ra") != nil, s.get("local") != nil)
	}
}
