package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/peer"
)

func TestBindingKeys(t *testing.T) {
	p := mustParse(t, `
scopes:
  "wallet:*":
    bind: session
  wallet:sign:
    bind: user
    proofOfPossession: required
  deploy:prod:
    bind: process
remote:
  scopes: ["wallet:*", docs:read]
  methods: [totp]
`)
	for scope, want := range map[string]peer.Mode{
		"wallet:sign":   peer.User,
		"wallet:export": peer.Session,
		"deploy:prod":   peer.Process,
		"other:thing":   peer.Client,
	} {
		if got := p.Resolve(scope).Bind; got != want {
			t.Errorf("Resolve(%s).Bind = %q, want %q", scope, got, want)
		}
	}
	if !p.Resolve("wallet:sign").ProofRequired || p.Resolve("wallet:export").ProofRequired {
		t.Error("proofOfPossession not applied per scope")
	}
	if !p.RemoteAllowsScope("wallet:export") || !p.RemoteAllowsScope("docs:read") || p.RemoteAllowsScope("deploy:prod") {
		t.Error("remote.scopes not applied")
	}
	if !p.RemoteAllowsMethod("totp") || p.RemoteAllowsMethod("password") {
		t.Error("remote.methods not applied")
	}
	d := Default()
	if d.Resolve("wallet:export").Bind != peer.Client || d.Resolve("wallet:export").ProofRequired {
		t.Error("the default binding is not client, proof optional")
	}
	if d.RemoteAllowsScope("credential:link") || !d.RemoteAllowsScope("wallet:export") || !d.RemoteAllowsMethod("password") {
		t.Error("the default remote rule is not: every scope but credential:*, every method")
	}
	if d.Resolve("bad scope").Bind != peer.Process {
		t.Error("a denied scope is not bound to the narrowest")
	}
}

func TestBindingKeyErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"scopes:\n  a:\n    bind: proces\n", `line 3: scopes.a.bind: "proces" is not one of process, client, session, user (did you mean process?)`},
		{"scopes:\n  a:\n    proofOfPossession: yes\n", `line 3: scopes.a.proofOfPossession: `},
		{"remote:\n  scopes: [\"bad scope\"]\n", `line 2: remote.scopes[0]: "bad scope": not a scope name or pattern`},
		{"remote:\n  methods: [totpp]\n", `line 2: remote.methods[0]: unknown method "totpp" (did you mean totp?)`},
		{"remote:\n  sockets: []\n", `line 2: remote.sockets: unknown key`},
	} {
		_, err := Parse([]byte(tc.file))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v; want %q", tc.file, err, tc.want)
		}
	}
}

func TestBuiltinAdministrativeScopes(t *testing.T) {
	for _, s := range []string{"console:settings", "business_account:delete", "console:"} {
		r := Default().Resolve(s)
		if !r.Known || !r.Required || !r.SingleUse || r.TTL != 5*time.Minute {
			t.Errorf("Resolve(%s) = %+v; want built in, single use, 5 minutes", s, r)
		}
	}
	p := mustParse(t, "builtinScopes: false\n")
	if p.Resolve("console:settings").Known {
		t.Error("builtinScopes: false keeps console:*")
	}
	q := mustParse(t, "scopes:\n  console:logs:\n    singleUse: false\n")
	if r := q.Resolve("console:logs"); r.SingleUse || r.TTL != 5*time.Minute {
		t.Errorf("a file entry does not override console:*: %+v", r)
	}
}

func BenchmarkResolveBind(b *testing.B) {
	p := Default()
	b.ReportAllocs()
	for b.Loop() {
		p.Resolve("wallet:export")
	}
}
