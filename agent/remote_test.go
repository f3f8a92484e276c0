package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc"
	"github.com/stepup-agent/stepup-agent/peer"
	"github.com/stepup-agent/stepup-agent/prompt"
	"github.com/stepup-agent/stepup-agent/remote"
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
	p.flush()
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
	if n := s.revoke(b, nil); n != 0 {
		t.Fatalf("a reset through another connection revoked %d tokens", n)
	}
	if n := s.revoke(a, []string{"y"}); n != 1 || s.get("ra") != nil || s.get("local") == nil {
		t.Fatalf("a reset through the connection revoked %d, and ra held %v, local held %v", n, s.get("ra") != nil, s.get("local") != nil)
	}
}

func remoteCtx(key string) context.Context {
	ctx := ipc.WithPeer(context.Background(), &ipc.Peer{UID: os.Getuid(), Proc: peer.Proc{PID: 4242, Start: 9}, Remote: key})
	return remote.NewContext(ctx, &remote.Conn{PID: 4242, Destination: "build-01", TTY: "/dev/pts/9"})
}

// A remote and a local request for the same scope at once never share a
// prompt (nor its token): each gets its own, naming its requester.
func TestRemoteAndLocalPromptsAreNotShared(t *testing.T) {
	release := make(chan struct{})
	var f *fixture
	var mu sync.Mutex
	var descs []string
	var ttys []string
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) {
		mu.Lock()
		descs = append(descs, req.Description)
		ttys = append(ttys, req.Env.TTY)
		mu.Unlock()
		<-release
		f.advance(30 * time.Second) // a fresh code for each prompt
		return f.code(0), nil
	}}
	f = newFixture(t, p, true)
	var wg sync.WaitGroup
	var remoteTok, localTok string
	var remoteErr, localErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		params := `{"requestedScopes":["wallet:export"],"tty":"/dev/pts/77","client":{"name":"deployctl","pid":31337}}`
		res, err := f.a.Handle(remoteCtx("ssh build-01 (pid 4242) started 9"), api.MethodPromptStepUpAuth, json.RawMessage(params))
		remoteErr = err
		if tr, ok := res.(*api.TokenResult); ok {
			remoteTok = tr.Token
		}
	}()
	go func() {
		defer wg.Done()
		res, err := f.a.Prompt(context.Background(), routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}, Method: api.TOTP}) // the method the remote one gets
		localErr = err
		if res != nil {
			localTok = res.Token
		}
	}()
	time.Sleep(150 * time.Millisecond)
	close(release)
	wg.Wait()
	if remoteErr != nil || localErr != nil || remoteTok == "" || remoteTok == localTok {
		t.Fatalf("remote: %v, local: %v, one token shared: %v", remoteErr, localErr, remoteTok == localTok)
	}
	if got := p.calls.Load(); got != 2 {
		t.Fatalf("%d prompts for a remote and a local request, want 2", got)
	}
	var sawRemote bool
	for i, d := range descs {
		if strings.Contains(d, "Remote request through ssh build-01 (pid 4242) on /dev/pts/9:\na program on build-01 (via ssh, pid 31337 there, says it is deployctl) asks to step up for wallet:export.") {
			sawRemote = true
			if ttys[i] != "/dev/pts/9" {
				t.Fatalf("the remote prompt went to %q, not the ssh's terminal", ttys[i])
			}
		} else if strings.Contains(d, "Remote") {
			t.Fatalf("a local prompt says remote: %q", d)
		}
	}
	if !sawRemote {
		t.Fatalf("no prompt named the remote requester: %q", descs)
	}
}

// What only the workstation's user may do is refused remotely, with a
// hint; the remote policy denies scopes and methods it does not list.
func TestRemoteRefusals(t *testing.T) {
	f := newFixture(t, &scriptedPrompter{answer: func(context.Context, prompt.Request) (string, error) {
		return "", errors.New("no prompt expected")
	}}, true)
	f.pol = mustParse(t, "remote:\n  scopes: [\"wallet:*\"]\n  methods: [passkey]\n")
	ctx := remoteCtx("ssh build-01 (pid 4242) started 9")
	for _, tc := range []struct{ method, params, want string }{
		{api.MethodEnrollStart, `{"method":"totp"}`, "may not enroll credentials"},
		{api.MethodRemoveCredential, `{"credentialId":"x"}`, "may not remove credentials"},
		{api.MethodLock, `{}`, "may not lock the agent"},
		{api.MethodUnlock, `{}`, "may not unlock the agent"},
		{api.MethodStartVerification, `{"method":"totp","requestedScopes":["wallet:export"],"purpose":"unlock"}`, "may not unlock the agent"},
		{api.MethodPromptStepUpAuth, `{"requestedScopes":["user:delete"]}`, "does not let remote callers use scope user:delete"},
		{api.MethodPromptStepUpAuth, `{"requestedScopes":["wallet:export"],"method":"totp"}`, "does not let remote callers verify with totp"},
		{api.MethodPromptStepUpAuth, `{"requestedScopes":["wallet:export"]}`, "does not let remote callers verify with totp"},
		{api.MethodGetToken, `{"scope":"user:delete"}`, "does not let remote callers use scope user:delete"},
	} {
		_, err := f.a.Handle(ctx, tc.method, json.RawMessage(tc.params))
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeForbidden || !strings.Contains(ae.Message, tc.want) || ae.Data.Hint == "" {
			t.Errorf("%s %s: %v; want 4005 %q with a hint", tc.method, tc.params, err, tc.want)
		}
	}
	// Params that are null or not an object: a clear error, no panic.
	for _, params := range []string{``, `null`, `[1]`} {
		if _, err := f.a.Handle(ctx, api.MethodPromptStepUpAuth, json.RawMessage(params)); err == nil {
			t.Errorf("promptStepUpAuth %q from a remote caller succeeded", params)
		}
	}
	// The same requests from a local caller are not refused as remote.
	if _, err := f.a.Handle(context.Background(), api.MethodLock, json.RawMessage(`{}`)); err != nil {
		t.Fatalf("a local lock: %v", err)
	}
}

// status through the remote socket shows that connection's own tokens and
// nothing of the workstation: no paths, no pid, no local tokens nor the
// local programs they are bound to.
func TestRemoteStatusShowsOnlyItsOwn(t *testing.T) {
	f := newFixture(t, &scriptedPrompter{}, false)
	f.a.cfg.Socket = "/run/user/1000/stepup/agent.sock"
	f.a.cfg.PolicyStatus = func() api.PolicyStatus {
		return api.PolicyStatus{Path: "/home/alice/.config/stepup/policy.yaml", LoadedAt: f.now, Error: "/home/alice/.config/stepup/policy.yaml:3: bad"}
	}
	const mine, other = "ssh build-01 (pid 4242) started 9", "ssh build-02 (pid 4343) started 10"
	exp := f.now.Add(time.Hour)
	local := &peer.Identity{UID: os.Getuid(), Proc: peer.Proc{PID: 77, Start: 1}, Executable: "/home/alice/bin/walletctl"}
	f.a.tokens.add(&held{JTI: "local", Scopes: []string{"wallet:export"}, ExpiresAt: exp, Minter: local, Bind: []peer.Mode{peer.Client}})
	f.a.tokens.add(&held{JTI: "mine", Scopes: []string{"deploy:prod"}, ExpiresAt: exp, Remote: mine})
	f.a.tokens.add(&held{JTI: "other", Scopes: []string{"deploy:staging"}, ExpiresAt: exp, Remote: other})
	f.a.Flush()

	if st := f.a.Status(); len(st.Tokens) != 3 || st.Socket == "" {
		t.Fatalf("local status: %d tokens, socket %q; want all 3 and the socket", len(st.Tokens), st.Socket)
	}
	res, err := f.a.Handle(remoteCtx(mine), api.MethodStatus, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := res.(*api.Status)
	if len(st.Tokens) != 1 || st.Tokens[0].Scope != "deploy:prod" {
		t.Fatalf("remote status lists %+v; want only deploy:prod, stepped up through this connection", st.Tokens)
	}
	b, _ := json.Marshal(st)
	for _, leak := range []string{"/run/user", "/home/alice", "walletctl", "build-02", `"pid":` + strconv.Itoa(os.Getpid())} {
		if strings.Contains(string(b), leak) {
			t.Errorf("remote status shows %q of the workstation: %s", leak, b)
		}
	}
	if !strings.Contains(st.Remote, "build-01") {
		t.Errorf("remote status does not say it is a forwarded agent: %+v", st)
	}
}
