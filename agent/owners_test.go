package agent

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/peer"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

// testPersister is a persister on a memory keychain, running until the
// test ends.
func testPersister(t *testing.T) (*persister, keychain.Store) {
	t.Helper()
	st := keychain.NewMemory()
	p := newPersister(st, zap.NewNop())
	go p.run()
	t.Cleanup(p.close)
	return p, st
}

func stored(t *testing.T, p *persister, st keychain.Store, kind string) []string {
	t.Helper()
	p.flush()
	names, err := st.List(callerCtx(), kind)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestTokenStore(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tok := func(jti string, exp time.Duration, single bool, scopes ...string) *held {
		return &held{JTI: jti, Token: "t." + jti, Scopes: scopes, ExpiresAt: now.Add(exp), SingleUse: single}
	}
	tests := []struct {
		name   string
		tokens []*held
		do     func(s *tokenStore)
		scope  string
		want   string // jti best hands out for scope ("" none)
		count  int
	}{
		{name: "none", scope: "a", want: ""},
		{name: "one", tokens: []*held{tok("1", time.Minute, false, "a")}, scope: "a", want: "1", count: 1},
		{name: "other scope", tokens: []*held{tok("1", time.Minute, false, "a")}, scope: "b", want: "", count: 1},
		{name: "expired is never handed out", tokens: []*held{tok("1", -time.Second, false, "a")}, scope: "a", want: "", count: 1},
		{name: "multi-use before single-use", tokens: []*held{tok("1", time.Hour, true, "a"), tok("2", time.Minute, false, "a")}, scope: "a", want: "2", count: 2},
		{name: "longer life first", tokens: []*held{tok("1", time.Minute, false, "a"), tok("2", time.Hour, false, "a")}, scope: "a", want: "2", count: 2},
		{name: "falls back when the best is dropped",
			tokens: []*held{tok("1", time.Minute, false, "a", "b"), tok("2", time.Hour, false, "a")},
			do:     func(s *tokenStore) { s.drop(s.get("2")) }, scope: "a", want: "1", count: 1},
		{name: "revoke by scope",
			tokens: []*held{tok("1", time.Minute, false, "a", "b"), tok("2", time.Hour, false, "c")},
			do:     func(s *tokenStore) { s.revoke(anyCaller, []string{"b"}) }, scope: "a", want: "", count: 1},
		{name: "revoke all",
			tokens: []*held{tok("1", time.Minute, false, "a"), tok("2", time.Hour, false, "c")},
			do:     func(s *tokenStore) { s.revoke(anyCaller, nil) }, scope: "c", want: "", count: 0},
		{name: "sweep drops the expired",
			tokens: []*held{tok("1", time.Minute, false, "a"), tok("2", time.Hour, false, "a")},
			do:     func(s *tokenStore) { s.sweep(now.Add(2 * time.Minute)) }, scope: "a", want: "2", count: 1},
		{name: "consume once",
			tokens: []*held{tok("1", time.Minute, true, "a")},
			do: func(s *tokenStore) {
				h := s.get("1")
				if !s.consume(h) || s.consume(h) || !s.wasConsumed("1") {
					panic("consumed twice, or not remembered")
				}
			}, scope: "a", want: "", count: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, st := testPersister(t)
			s := newTokenStore(p)
			for _, h := range tt.tokens {
				s.add(h)
			}
			p.flush() // stored: handed out from now on
			if tt.do != nil {
				tt.do(s)
			}
			got := ""
			if h := s.best(tt.scope, now, ""); h != nil {
				got = h.JTI
			}
			if got != tt.want {
				t.Fatalf("best(%s) = %q, want %q", tt.scope, got, tt.want)
			}
			if s.count() != tt.count {
				t.Fatalf("count = %d, want %d", s.count(), tt.count)
			}
			if n := len(stored(t, p, st, keychain.KindToken)); n != tt.count {
				t.Fatalf("%d tokens in the keychain, want %d", n, tt.count)
			}
		})
	}
}

// Tokens of one minter share one identity in memory, however each was
// decoded, and the identity goes with the last of them.
func TestTokenStoreSharesMinters(t *testing.T) {
	p, _ := testPersister(t)
	s := newTokenStore(p)
	exp := time.Now().Add(time.Hour)
	decode := func(pid int) *peer.Identity {
		var id peer.Identity
		b, _ := json.Marshal(peer.Identity{UID: 1000, Proc: peer.Proc{PID: pid, Start: 7}, Executable: "/usr/bin/stepupctl"})
		json.Unmarshal(b, &id)
		return &id
	}
	a, b, c := &held{JTI: "a", Scopes: []string{"x"}, ExpiresAt: exp, Minter: decode(10)},
		&held{JTI: "b", Scopes: []string{"y"}, ExpiresAt: exp, Minter: decode(10)},
		&held{JTI: "c", Scopes: []string{"x"}, ExpiresAt: exp, Minter: decode(11)}
	s.load(a)
	s.add(b)
	s.load(c)
	if a.Minter != b.Minter || a.Minter == c.Minter {
		t.Fatalf("equal minters not shared (%p, %p) or different ones shared (%p)", a.Minter, b.Minter, c.Minter)
	}
	if n := len(s.minters.byKey); n != 2 {
		t.Fatalf("%d identities held for 2 minters", n)
	}
	s.drop(a)
	if n := len(s.minters.byKey); n != 2 {
		t.Fatalf("an identity still used by b was let go (%d held)", n)
	}
	s.revoke(anyCaller, nil)
	if len(s.minters.byKey) != 0 || len(s.minters.refs) != 0 {
		t.Fatalf("identities left after every token went: %d, %d", len(s.minters.byKey), len(s.minters.refs))
	}
}

func TestExpirySet(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		do   func(e *expirySet)
		id   string
		has  bool
		kept int
	}{
		{name: "add", do: func(e *expirySet) { e.add("x", now.Add(time.Minute)) }, id: "x", has: true, kept: 1},
		{name: "addNew refuses a seen id", do: func(e *expirySet) {
			if !e.addNew("x", now.Add(time.Minute)) || e.addNew("x", now.Add(time.Hour)) {
				panic("addNew")
			}
		}, id: "x", has: true, kept: 1},
		{name: "load of an expired id deletes it", do: func(e *expirySet) { e.load("x", now.Add(-time.Second), now) }, id: "x", has: false, kept: 0},
		{name: "sweep", do: func(e *expirySet) {
			e.add("x", now.Add(time.Minute))
			e.add("y", now.Add(time.Hour))
			e.sweep(now.Add(2 * time.Minute))
		}, id: "x", has: false, kept: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, st := testPersister(t)
			e := newExpirySet(keychain.KindReplay, p)
			tt.do(e)
			if e.has(tt.id) != tt.has {
				t.Fatalf("has(%s) = %v", tt.id, !tt.has)
			}
			if n := len(stored(t, p, st, keychain.KindReplay)); n != tt.kept {
				t.Fatalf("%d kept in the keychain, want %d", n, tt.kept)
			}
		})
	}
}

func TestOpenStore(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		do   func(s *openStore[string]) error
		want string // error substring, "" none
		open int
	}{
		{name: "add and get", do: func(s *openStore[string]) error {
			o, err := s.add("a", "c", now)
			if err != nil {
				return err
			}
			if g := s.get(o.ID, now); g == nil || g.Val != "a" {
				return errors.New("not found")
			}
			return nil
		}, open: 1},
		{name: "expired is gone", do: func(s *openStore[string]) error {
			o, _ := s.add("a", "c", now)
			if s.get(o.ID, now.Add(time.Minute)) != nil {
				return errors.New("expired operation returned")
			}
			return nil
		}, open: 0},
		{name: "cap", do: func(s *openStore[string]) error {
			for i := 0; i < 3; i++ {
				if _, err := s.add("a", "c", now); err != nil {
					return err
				}
			}
			return nil
		}, want: "this client already has 2 things open", open: 2},
		{name: "global cap", do: func(s *openStore[string]) error {
			s.add("a", "c1", now)
			s.add("b", "c2", now)
			_, err := s.add("c", "c3", now)
			return err
		}, want: "2 things are already open", open: 2},
		{name: "priority room above the global cap", do: func(s *openStore[string]) error {
			s.add("a", "c1", now)
			s.add("b", "c2", now)
			o, err := s.reserve("c3", true, now)
			if err != nil {
				return err
			}
			if s.get(o.ID, now) != nil {
				return errors.New("a reserved place was found by id")
			}
			s.release(o)
			return nil
		}, open: 2},
		{name: "one priority place per client, the newest wins", do: func(s *openStore[string]) error {
			first, _ := s.reserve("c1", true, now)
			s.fill(first, "a")
			second, err := s.reserve("c1", true, now)
			if err != nil {
				return err
			}
			s.fill(second, "b")
			if s.get(first.ID, now) != nil {
				return errors.New("the replaced priority operation is still open")
			}
			return nil
		}, open: 1},
		{name: "a full priority room gives way to the newest", do: func(s *openStore[string]) error {
			first, _ := s.reserve("c1", true, now)
			s.fill(first, "a")
			second, err := s.reserve("c2", true, now.Add(time.Second))
			if err != nil {
				return err
			}
			s.fill(second, "b")
			if s.get(first.ID, now) != nil || s.get(second.ID, now) == nil {
				return errors.New("the oldest priority operation did not give way")
			}
			return nil
		}, open: 1},
		{name: "cap after expiry makes room", do: func(s *openStore[string]) error {
			s.add("a", "c", now)
			s.add("b", "c", now)
			_, err := s.add("c", "c", now.Add(time.Minute))
			return err
		}, open: 1},
		{name: "taken once", do: func(s *openStore[string]) error {
			o, _ := s.add("a", "c", now)
			if !s.take(o) || s.take(o) || s.holds(o) {
				return errors.New("taken twice")
			}
			return nil
		}, open: 0},
		{name: "removeIf", do: func(s *openStore[string]) error {
			s.add("a", "c", now)
			s.add("b", "c", now)
			s.removeIf(func(v string) bool { return v == "a" })
			return nil
		}, open: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newOpenStore[string]("things", 30*time.Second, 2, 2, 1)
			err := tt.do(s)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if tt.want != "" && !errors.Is(err, api.ErrRateLimited) {
				t.Fatalf("err = %v, want rate_limited", err)
			}
			if s.count() != tt.open {
				t.Fatalf("%d open, want %d", s.count(), tt.open)
			}
		})
	}
}

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	pol := policy.Default()
	max := pol.Limits.MaxFailures
	window := pol.Limits.Window.D()
	tests := []struct {
		name     string
		failures int
		success  bool
		later    time.Duration
		limited  bool
	}{
		{name: "no failures", failures: 0},
		{name: "below the limit", failures: max - 1},
		{name: "at the limit", failures: max, limited: true},
		{name: "success clears", failures: max - 1, success: true},
		{name: "lockout ends after the window", failures: max, later: window + time.Second},
		{name: "old failures no longer count", failures: max - 1, later: window + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, st := testPersister(t)
			clock := now
			l := newLimiter(func() time.Time { return clock }, func() *policy.Policy { return pol }, p)
			for i := 0; i < tt.failures; i++ {
				left, retry := l.failure(api.TOTP)
				if want := max - i - 1; left != want {
					t.Fatalf("failure %d: %d left, want %d", i+1, left, want)
				}
				if (left == 0) != (retry > 0) {
					t.Fatalf("failure %d: retry after %d with %d left", i+1, retry, left)
				}
			}
			if tt.success {
				l.success(api.TOTP)
			}
			clock = clock.Add(tt.later)
			if tt.later > 0 && !tt.limited && tt.failures == max-1 {
				// One more failure after the window must not lock out.
				if left, _ := l.failure(api.TOTP); left == 0 {
					t.Fatal("failures from before the window still counted")
				}
			}
			err := l.check(api.TOTP)
			if (err != nil) != tt.limited {
				t.Fatalf("check = %v, want limited %v", err, tt.limited)
			}
			if tt.limited && !errors.Is(err, api.ErrRateLimited) {
				t.Fatalf("check = %v", err)
			}
			if tt.success && len(stored(t, p, st, keychain.KindLimit)) != 0 {
				t.Fatal("a cleared limit stays in the keychain")
			}
		})
	}
}

func TestLimiterCancels(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		cancels int
		later   time.Duration
		client  string
		limited bool
	}{
		{name: "below", cancels: maxCancels - 1, client: "c"},
		{name: "at", cancels: maxCancels, client: "c", limited: true},
		{name: "another client", cancels: maxCancels, client: "other"},
		{name: "after the window", cancels: maxCancels, client: "c", later: cancelWindow + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testPersister(t)
			clock := now
			l := newLimiter(func() time.Time { return clock }, policy.Default, p)
			for i := 0; i < tt.cancels; i++ {
				l.noteCancel("c")
			}
			clock = clock.Add(tt.later)
			if err := l.checkCancels(tt.client); (err != nil) != tt.limited {
				t.Fatalf("checkCancels = %v, want limited %v", err, tt.limited)
			}
		})
	}
}

func TestCredSet(t *testing.T) {
	cred := func(id, m string, age time.Duration) *method.Credential {
		return &method.Credential{ID: id, Method: m, Label: m, CreatedAt: time.Unix(1e9, 0).Add(-age), Secret: json.RawMessage(`{}`)}
	}
	tests := []struct {
		name    string
		creds   []*method.Credential
		do      func(s *credSet)
		mfa     bool
		primary bool
		ids     []string // all(), oldest first
	}{
		{name: "empty", ids: []string{}},
		{name: "oldest first", creds: []*method.Credential{cred("b", api.TOTP, 0), cred("a", api.Passkey, time.Hour)}, mfa: true, primary: true, ids: []string{"a", "b"}},
		{name: "recovery alone is MFA but not primary", creds: []*method.Credential{cred("r", api.RecoveryCode, 0)}, mfa: true, ids: []string{"r"}},
		{name: "wallet is not MFA", creds: []*method.Credential{cred("w", api.Wallet, 0)}, ids: []string{"w"}},
		{name: "remove", creds: []*method.Credential{cred("t", api.TOTP, 0), cred("w", api.Wallet, 0)},
			do: func(s *credSet) { s.remove("t") }, ids: []string{"w"}},
		{name: "removeMethod", creds: []*method.Credential{cred("r1", api.RecoveryCode, 0), cred("r2", api.RecoveryCode, 0), cred("t", api.TOTP, time.Hour)},
			do: func(s *credSet) {
				if got := s.removeMethod(api.RecoveryCode); len(got) != 2 {
					panic("removeMethod")
				}
			}, mfa: true, primary: true, ids: []string{"t"}},
		{name: "update of a removed credential is dropped", creds: []*method.Credential{cred("t", api.TOTP, 0)},
			do: func(s *credSet) {
				c := s.of(api.TOTP)[0]
				s.remove("t")
				s.update(c)
			}, ids: []string{}},
		{name: "of hands out copies", creds: []*method.Credential{cred("t", api.TOTP, 0)},
			do: func(s *credSet) {
				s.of(api.TOTP)[0].Label = "changed"
				if c, _ := s.get("t"); c.Label != api.TOTP {
					panic("of handed out the stored credential")
				}
			}, mfa: true, primary: true, ids: []string{"t"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, st := testPersister(t)
			s := newCredSet(p)
			for _, c := range tt.creds {
				s.add(c)
			}
			if tt.do != nil {
				tt.do(s)
			}
			if s.hasMFA() != tt.mfa || s.hasPrimary() != tt.primary {
				t.Fatalf("hasMFA %v hasPrimary %v, want %v %v", s.hasMFA(), s.hasPrimary(), tt.mfa, tt.primary)
			}
			var ids []string
			for _, c := range s.all() {
				ids = append(ids, c.ID)
			}
			if len(ids) != len(tt.ids) {
				t.Fatalf("all = %v, want %v", ids, tt.ids)
			}
			for i := range ids {
				if ids[i] != tt.ids[i] {
					t.Fatalf("all = %v, want %v", ids, tt.ids)
				}
			}
			if n := len(stored(t, p, st, keychain.KindCredential)); n != len(tt.ids) {
				t.Fatalf("%d credentials in the keychain, want %d", n, len(tt.ids))
			}
		})
	}
}
