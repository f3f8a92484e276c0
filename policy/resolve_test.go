package policy

import (
	"slices"
	"testing"
	"time"
)

func mustParse(t *testing.T, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	p := Default()
	if p.UnknownScopes != UnknownRequire || p.Prompt.Driver != "auto" || p.Prompt.Timeout.D() != 60*time.Second ||
		p.Limits.MaxFailures != 5 || p.Limits.Window.D() != 15*time.Minute || !p.LocksOnSleep() || p.AllowReauthWithMfa {
		t.Errorf("Default() = %+v", p)
	}
	if got := Builtin(); len(got) != 12 {
		t.Errorf("Builtin has %d scopes", len(got))
	}
}

// TestResolveBuiltins: with no file, Dynamic's scopes.
func TestResolveBuiltins(t *testing.T) {
	for _, p := range []*Policy{Default(), mustParse(t, ""), {}} {
		for _, s := range []string{"wallet:export", "wallet:delete", "wallet:restore", "credential:unlink", "user:delete"} {
			want := Rule{Scope: s, Known: true, Required: true, SingleUse: true, TTL: 5 * time.Minute}
			if got := p.Resolve(s); !sameRule(got, want) {
				t.Errorf("Resolve(%s) = %+v, want %+v", s, got, want)
			}
		}
		for _, s := range []string{"wallet:sign", "wallet:delegate", "credential:link", "credential:update", "user:update"} {
			want := Rule{Scope: s, Known: true, Required: true, SingleUse: false, TTL: 10 * time.Minute}
			if got := p.Resolve(s); !sameRule(got, want) {
				t.Errorf("Resolve(%s) = %+v, want %+v", s, got, want)
			}
		}
	}
}

func sameRule(a, b Rule) bool {
	return a.Scope == b.Scope && a.Known == b.Known && a.Denied == b.Denied && a.Required == b.Required &&
		a.TTL == b.TTL && a.SingleUse == b.SingleUse && slices.Equal(a.Methods, b.Methods) && slices.Equal(a.Clients, b.Clients)
}

func TestResolveUnknown(t *testing.T) {
	tests := []struct {
		policy string
		want   Rule
	}{
		{"", Rule{Scope: "x:y", Required: true, SingleUse: true, TTL: 5 * time.Minute}},
		{"unknownScopes: require", Rule{Scope: "x:y", Required: true, SingleUse: true, TTL: 5 * time.Minute}},
		{"unknownScopes: deny", Rule{Scope: "x:y", Denied: true, Required: true, SingleUse: true, TTL: 5 * time.Minute}},
		{"unknownScopes: allow", Rule{Scope: "x:y", Required: false, SingleUse: true, TTL: 5 * time.Minute}},
		// A pattern makes it known: multi use, ten minutes unless said.
		{"unknownScopes: deny\nscopes: {\"x:*\": {}}", Rule{Scope: "x:y", Known: true, Required: true, TTL: 10 * time.Minute}},
		{"unknownScopes: allow\nscopes: {\"x:*\": {}}", Rule{Scope: "x:y", Known: true, Required: true, TTL: 10 * time.Minute}},
	}
	for _, tt := range tests {
		if got := mustParse(t, tt.policy).Resolve("x:y"); !sameRule(got, tt.want) {
			t.Errorf("%q: Resolve = %+v, want %+v", tt.policy, got, tt.want)
		}
	}
}

func TestResolveLayers(t *testing.T) {
	p := mustParse(t, `
scopes:
  "*":
    methods: [totp]
  "wallet:*":
    ttl: 7m
    clients: [/usr/bin/wallet]
  "wallet:ex*":
    methods: [passkey]
  "wallet:export":
    ttl: 1m
  "*:sign":
    singleUse: true
  docs:read:
    required: false
  deploy:prod:
    ttl: 2m
    singleUse: true
    methods: [totp, passkey]
    clients: [/usr/local/bin/deployctl]
`)
	tests := []Rule{
		// builtin (single, 5m) < * < wallet:* < wallet:ex* < exact.
		{Scope: "wallet:export", Known: true, Required: true, SingleUse: true, TTL: time.Minute, Methods: []string{"passkey"}, Clients: []string{"/usr/bin/wallet"}},
		// builtin multi 10m, wallet:* ttl 7m, *:sign single use.
		{Scope: "wallet:sign", Known: true, Required: true, SingleUse: true, TTL: 7 * time.Minute, Methods: []string{"totp"}, Clients: []string{"/usr/bin/wallet"}},
		{Scope: "wallet:exfoo", Known: true, Required: true, TTL: 7 * time.Minute, Methods: []string{"passkey"}, Clients: []string{"/usr/bin/wallet"}},
		{Scope: "docs:read", Known: true, Required: false, TTL: 10 * time.Minute, Methods: []string{"totp"}},
		{Scope: "deploy:prod", Known: true, Required: true, SingleUse: true, TTL: 2 * time.Minute, Methods: []string{"totp", "passkey"}, Clients: []string{"/usr/local/bin/deployctl"}},
		// "*" names every scope: nothing is unknown any more.
		{Scope: "other", Known: true, Required: true, TTL: 10 * time.Minute, Methods: []string{"totp"}},
		// The builtin single-use 5m survives where nothing overrides it.
		{Scope: "user:delete", Known: true, Required: true, SingleUse: true, TTL: 5 * time.Minute, Methods: []string{"totp"}},
	}
	for _, want := range tests {
		if got := p.Resolve(want.Scope); !sameRule(got, want) {
			t.Errorf("Resolve(%s)\n got %+v\nwant %+v", want.Scope, got, want)
		}
	}
	// The same policy built by hand (no precomputed pattern order).
	q := &Policy{Scopes: p.Scopes, UnknownScopes: p.UnknownScopes}
	for _, want := range tests {
		if got := q.Resolve(want.Scope); !sameRule(got, want) {
			t.Errorf("hand-built Resolve(%s)\n got %+v\nwant %+v", want.Scope, got, want)
		}
	}
}

// TestResolveSpecificity: more literal characters win, whatever the order
// of the file or of the map.
func TestResolveSpecificity(t *testing.T) {
	p := mustParse(t, `
scopes:
  "a*b*cdefgh": {ttl: 3m}
  "*h": {ttl: 1m}
  "a*": {ttl: 2m}
  "ab*": {ttl: 4m}
  "a*h": {ttl: 5m}
`)
	// Literals: "a*b*cdefgh" 8, "ab*" 2, "a*h" 2, "a*" 1, "*h" 1. On a
	// tie the byte order decides: "a*h" < "ab*", so "ab*" applies last.
	if got := p.Resolve("abxcdefgh").TTL; got != 3*time.Minute {
		t.Errorf("abxcdefgh ttl %v", got)
	}
	if got := p.Resolve("abh").TTL; got != 4*time.Minute {
		t.Errorf("abh ttl %v", got)
	}
	if got := p.Resolve("axh").TTL; got != 5*time.Minute {
		t.Errorf("axh ttl %v", got)
	}
	if got := p.Resolve("ax").TTL; got != 2*time.Minute {
		t.Errorf("ax ttl %v", got)
	}
	// Equal literals, fewer stars is more specific.
	p = mustParse(t, "scopes: {\"a*b*\": {ttl: 1m}, \"ab*\": {ttl: 2m}}")
	if got := p.Resolve("abab").TTL; got != 2*time.Minute {
		t.Errorf("abab ttl %v", got)
	}
}

func TestResolveFileOverridesBuiltin(t *testing.T) {
	p := mustParse(t, "scopes:\n  wallet:export: {singleUse: false}\n  wallet:sign: {required: false}\n")
	if r := p.Resolve("wallet:export"); r.SingleUse || r.TTL != 5*time.Minute || !r.Required {
		t.Errorf("wallet:export %+v: keeps the builtin ttl, takes the file's singleUse", r)
	}
	if r := p.Resolve("wallet:sign"); r.Required {
		t.Errorf("wallet:sign %+v", r)
	}
}

func TestResolveBuiltinScopesFalse(t *testing.T) {
	p := mustParse(t, "builtinScopes: false\nunknownScopes: deny\nscopes: {wallet:sign: {ttl: 1m}}\n")
	if r := p.Resolve("wallet:export"); r.Known || !r.Denied {
		t.Errorf("wallet:export %+v: builtins are off", r)
	}
	if r := p.Resolve("wallet:sign"); !r.Known || r.SingleUse || r.TTL != time.Minute {
		t.Errorf("wallet:sign %+v: from the file alone", r)
	}
	p = mustParse(t, "builtinScopes: false\n")
	if r := p.Resolve("wallet:sign"); r.Known || !r.SingleUse || r.TTL != 5*time.Minute {
		t.Errorf("wallet:sign %+v: unknown, so single use 5m", r)
	}
}

func TestResolveBadScopes(t *testing.T) {
	p := mustParse(t, "unknownScopes: allow\nscopes: {\"*\": {required: false}}\n")
	for _, s := range []string{"", "a b", "wallet:*", "*", "a\nb", "é", string(make([]byte, 300))} {
		if r := p.Resolve(s); !r.Denied || !r.Required {
			t.Errorf("Resolve(%q) = %+v, want denied", s, r)
		}
	}
	if r := p.Resolve("ok:scope"); r.Denied || r.Required {
		t.Errorf("ok:scope %+v", r)
	}
}

// TestResolveCopies: a caller changing a rule's slices does not change
// the policy.
func TestResolveCopies(t *testing.T) {
	p := mustParse(t, "scopes: {a: {methods: [totp], clients: [/bin/a]}}")
	r := p.Resolve("a")
	r.Methods[0], r.Clients[0] = "x", "y"
	if r := p.Resolve("a"); r.Methods[0] != "totp" || r.Clients[0] != "/bin/a" {
		t.Errorf("policy changed: %+v", r)
	}
}

func TestRuleAllows(t *testing.T) {
	r := Rule{}
	if !r.AllowsMethod("totp") || !r.AllowsClient("/bin/x") {
		t.Error("empty lists allow any")
	}
	r = Rule{Methods: []string{"passkey"}, Clients: []string{"/bin/a"}}
	if r.AllowsMethod("totp") || !r.AllowsMethod("passkey") || r.AllowsClient("/bin/b") || !r.AllowsClient("/bin/a") {
		t.Errorf("%+v", r)
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, scope string
		want           bool
	}{
		{"wallet:export", "wallet:export", true},
		{"wallet:export", "wallet:exports", false},
		{"wallet:*", "wallet:", true},
		{"wallet:*", "wallet:sign", true},
		{"wallet:*", "wallet", false},
		{"*", "", true},
		{"*", "anything", true},
		{"*:sign", "wallet:sign", true},
		{"*:sign", "wallet:signs", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"ab*ba", "aba", false},
		{"ab*ba", "abba", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "acb", false},
		{"a*b*c", "axbxbxc", true},
		{"a**c", "ac", true},
		{"*b*", "abc", true},
		{"*b*", "ac", false},
		{"x*y*z", "xyzyz", true},
		{"x*yz*z", "xyzz", true},
		{"x*yz*z", "xyz", false},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.scope); got != tt.want {
			t.Errorf("Match(%q, %q) = %v", tt.pattern, tt.scope, got)
		}
	}
}

func TestResolveAllocs(t *testing.T) {
	p := mustParse(t, "scopes: {\"wallet:*\": {ttl: 3m}, \"*:read\": {required: false}}")
	n := testing.AllocsPerRun(100, func() { p.Resolve("wallet:export") })
	if n > 0 {
		t.Errorf("Resolve allocates %v times", n)
	}
}

func BenchmarkResolve(b *testing.B) {
	p, _ := Parse([]byte(designExample))
	for b.Loop() {
		p.Resolve("wallet:export")
	}
}
