package agent

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/peer"
	"go.uber.org/zap"
)

// testCaller is the caller of the unit tests' requests: what ipc would
// read at accept for a program in a terminal, with a few ancestors.
var testCaller = &peer.Identity{
	UID: os.Getuid(), GID: os.Getgid(),
	Proc:       peer.Proc{PID: 4242, Start: 1000},
	Boot:       "boot-1",
	Executable: "/usr/bin/stepupctl",
	Session:    peer.LoginSession{Kind: peer.SessionTTY, ID: 34816},
	Parents:    []peer.Proc{{PID: 4000, Start: 900}, {PID: 3000, Start: 800}, {PID: 2000, Start: 700}, {PID: 1000, Start: 600}},
}

// callerCtx is a request context of testCaller.
func callerCtx() context.Context { return peer.NewContext(context.Background(), testCaller) }

// otherCaller returns a caller like testCaller with change applied.
func otherCaller(change func(*peer.Identity)) *peer.Identity {
	c := *testCaller
	c.Parents = append([]peer.Proc(nil), testCaller.Parents...)
	change(&c)
	return &c
}

func TestTokenStoreBestFor(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	sibling := otherCaller(func(id *peer.Identity) { id.PID, id.Start = 4243, 1001 })
	child := otherCaller(func(id *peer.Identity) {
		id.Parents = append([]peer.Proc{id.Proc}, id.Parents...)
		id.PID, id.Start = 5000, 2000
	})
	otherExe := otherCaller(func(id *peer.Identity) { id.Executable = "/tmp/x/stepupctl" })
	otherTTY := otherCaller(func(id *peer.Identity) { id.Session.ID = 34817 })
	remote := otherCaller(func(id *peer.Identity) { id.Remote = "ssh host" })
	cnf := &api.Cnf{JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
	tok := func(jti string, modes []peer.Mode, details string, c *api.Cnf) *held {
		return &held{JTI: jti, Scopes: []string{"s"}, ExpiresAt: now.Add(time.Minute), Minter: testCaller, Bind: modes, Details: details, Cnf: c}
	}
	P, C, S, U := []peer.Mode{peer.Process}, []peer.Mode{peer.Client}, []peer.Mode{peer.Session}, []peer.Mode{peer.User}
	tests := []struct {
		name        string
		h           *held
		w           want
		got, refuse bool
	}{
		{"client: same program, same terminal", tok("1", C, "", nil), want{caller: sibling}, true, false},
		{"client: another executable", tok("1", C, "", nil), want{caller: otherExe}, false, true},
		{"client: another terminal", tok("1", C, "", nil), want{caller: otherTTY}, false, true},
		{"process: a descendant", tok("1", P, "", nil), want{caller: child}, true, false},
		{"process: a sibling", tok("1", P, "", nil), want{caller: sibling}, false, true},
		{"session: another program of the terminal", tok("1", S, "", nil), want{caller: otherExe}, true, false},
		{"session: another terminal", tok("1", S, "", nil), want{caller: otherTTY}, false, true},
		{"user: another terminal", tok("1", U, "", nil), want{caller: otherTTY}, true, false},
		{"user: never a remote caller", tok("1", U, "", nil), want{caller: remote}, false, true},
		{"several scopes: the narrowest decides", tok("1", []peer.Mode{peer.User, peer.Process}, "", nil), want{caller: sibling}, false, true},
		{"no caller (before binding) admits no one", &held{JTI: "1", Scopes: []string{"s"}, ExpiresAt: now.Add(time.Minute), Bind: U}, want{caller: testCaller}, false, true},
		{"details must be equal", tok("1", U, `[{"type":"a"}]`, nil), want{caller: testCaller}, false, false},
		{"equal details", tok("1", U, `[{"type":"a"}]`, nil), want{caller: testCaller, details: `[{"type":"a"}]`}, true, false},
		{"a key-bound token needs the key", tok("1", U, "", cnf), want{caller: testCaller}, false, false},
		{"a plain token is not for a request with a key", tok("1", U, "", nil), want{caller: testCaller, cnf: cnf}, false, false},
		{"the same key", tok("1", U, "", cnf), want{caller: testCaller, cnf: &api.Cnf{JKT: cnf.JKT}}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTokenStore(newPersister(keychain.NewMemory(), zap.NewNop()))
			s.load(tt.h)
			h, refused := s.bestFor("s", now, tt.w)
			if (h != nil) != tt.got || (refused != nil) != tt.refuse {
				t.Fatalf("bestFor: handed %v, refused %v; want %v, %v", h != nil, refused != nil, tt.got, tt.refuse)
			}
		})
	}
}

// A shared prompt is joined only by callers the first one's binding
// admits; another caller gets a flight of its own.
func TestFlightGroupBinding(t *testing.T) {
	g := newFlightGroup()
	release := make(chan struct{})
	runs := make(chan string, 3)
	fn := func(name string) func(context.Context) (*api.TokenResult, error) {
		return func(context.Context) (*api.TokenResult, error) {
			runs <- name
			<-release
			return &api.TokenResult{Method: name}, nil
		}
	}
	sibling := otherCaller(func(id *peer.Identity) { id.PID, id.Start = 4243, 1001 })
	otherExe := otherCaller(func(id *peer.Identity) { id.Executable = "/tmp/x/stepupctl" })
	modes := []peer.Mode{peer.Client}
	res := make(chan string, 3)
	for _, c := range []struct {
		name string
		id   *peer.Identity
	}{{"leader", testCaller}, {"sibling", sibling}, {"other", otherExe}} {
		ctx := peer.NewContext(context.Background(), c.id)
		go func() {
			r, _ := g.do(ctx, "k", modes, fn(c.name))
			res <- c.name + ":" + r.Method
		}()
		switch c.name {
		case "leader":
			<-runs // the leader's flight is under way before the others ask
		case "sibling":
			for waiting := 0; waiting < 2; { // it has joined the leader's
				time.Sleep(time.Millisecond)
				g.mu.Lock()
				waiting = g.flights["k"][0].waiters
				g.mu.Unlock()
			}
		}
	}
	if got := <-runs; got != "other" {
		t.Fatalf("second flight run for %s, want other", got)
	}
	close(release)
	got := map[string]bool{}
	for range 3 {
		got[<-res] = true
	}
	for _, w := range []string{"leader:leader", "sibling:leader", "other:other"} {
		if !got[w] {
			t.Errorf("missing %s in %v", w, got)
		}
	}
	select {
	case r := <-runs:
		t.Fatalf("a third flight ran: %s", r)
	default:
	}
}

// Tokens persisted by a version without binding carry no caller: they
// are dropped at start, while a bound one survives a restart.
func TestTokensWithoutCallerDroppedAtStart(t *testing.T) {
	ctx := context.Background()
	st := keychain.NewMemory()
	a, err := New(ctx, Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopA := context.WithCancel(ctx)
	defer stopA()
	go a.Run(actx)
	a.mu.Lock()
	bound, err1 := a.mint(callerCtx(), []string{"wallet:sign"}, api.TOTP, []string{"otp"}, bindingOf(callerCtx(), nil, nil))
	old, err2 := a.mint(callerCtx(), []string{"wallet:export"}, api.TOTP, []string{"otp"}, bindingOf(callerCtx(), nil, nil))
	a.mu.Unlock()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	a.Flush()
	// Rewrite the second as an agent before binding stored it.
	var oldJTI string
	for _, h := range []*held{a.tokens.get(jtiOf(t, a, old.Token))} {
		oldJTI = h.JTI
		data, _ := json.Marshal(map[string]any{"jti": h.JTI, "token": h.Token, "scopes": h.Scopes, "expiresAt": h.ExpiresAt, "singleUse": h.SingleUse, "method": h.Method})
		if err := st.Put(ctx, keychain.KindToken, h.JTI, data); err != nil {
			t.Fatal(err)
		}
	}
	stopA()
	b, err := New(ctx, Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	go b.Run(bctx)
	b.Flush()
	if b.tokens.get(oldJTI) != nil {
		t.Fatal("a token without a caller was kept at start")
	}
	if _, err := st.Get(ctx, keychain.KindToken, oldJTI); err == nil {
		t.Fatal("a token without a caller is still in the keychain")
	}
	if r, err := b.IsStepUpRequired(callerCtx(), &api.ScopeParams{Scope: "wallet:sign"}); err != nil || r.Required {
		t.Fatalf("the bound token did not survive the restart for its caller: %+v, %v", r, err)
	}
	_ = bound // the control: held across the restart
}

func jtiOf(t *testing.T, a *Agent, tok string) string {
	c, err := a.signer.Verify(tok, a.now())
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}
