package agent

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	totpm "github.com/stepup-agent/stepup-agent/method/totp"
	"github.com/stepup-agent/stepup-agent/policy"
	"github.com/stepup-agent/stepup-agent/prompt"
)

// scriptedPrompter stands in for a person at a prompt in these unit tests
// of the agent's prompt logic (sharing, serialization, retries, hang-up).
// The real prompt programs are driven in prompt/'s tests and end to end.
type scriptedPrompter struct {
	answer  func(ctx context.Context, req prompt.Request) (string, error)
	calls   atomic.Int32
	open    atomic.Int32
	maxOpen atomic.Int32
}

func (p *scriptedPrompter) Name() string { return "scripted" }
func (p *scriptedPrompter) GetPIN(ctx context.Context, req prompt.Request) (string, error) {
	p.calls.Add(1)
	n := p.open.Add(1)
	defer p.open.Add(-1)
	for {
		m := p.maxOpen.Load()
		if n <= m || p.maxOpen.CompareAndSwap(m, n) {
			break
		}
	}
	return p.answer(ctx, req)
}
func (p *scriptedPrompter) Confirm(ctx context.Context, req prompt.Request) error { return nil }

type sel struct{ p prompt.Prompter }

func (s sel) Select(api.PromptEnv) (prompt.Prompter, error) { return s.p, nil }
func (s sel) Name() string                                  { return "scripted" }

type fixture struct {
	a      *Agent
	secret string
	now    time.Time
	mu     sync.Mutex
	pol    *policy.Policy
}

func (f *fixture) clock() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *fixture) code(offset time.Duration) string {
	c, err := totp.GenerateCode(f.secret, f.clock().Add(offset))
	if err != nil {
		panic(err)
	}
	return c
}

func newFixture(t *testing.T, p prompt.Prompter, enroll bool) *fixture {
	t.Helper()
	f := &fixture{now: time.Unix(1_800_000_000, 0), pol: policy.Default()}
	tm := totpm.New(totpm.Config{Deps: method.Deps{Now: f.clock}})
	a, err := New(callerCtx(), Config{
		Store:   keychain.NewMemory(),
		Policy:  func() *policy.Policy { return f.pol },
		Prompts: func() prompt.Selector { return sel{p} },
		Methods: []method.Method{tm},
		Now:     f.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(callerCtx())
	go a.Run(ctx)
	t.Cleanup(cancel)
	f.a = a
	if enroll {
		res, err := a.EnrollStart(ctx, &api.EnrollStartParams{Method: api.TOTP})
		if err != nil {
			t.Fatal(err)
		}
		f.secret = res.Secret
		resp, _ := json.Marshal(map[string]string{"code": f.code(-30 * time.Second)})
		if _, err := a.EnrollFinish(ctx, &api.EnrollFinishParams{EnrollmentID: res.EnrollmentID, Response: resp}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestConcurrentPromptsShareOne(t *testing.T) {
	release := make(chan struct{})
	var f *fixture
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) {
		<-release
		return f.code(0), nil
	}}
	f = newFixture(t, p, true)
	const n = 5
	var wg sync.WaitGroup
	tokens := make([]string, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := f.a.Prompt(callerCtx(), routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}})
			errs[i] = err
			if res != nil {
				tokens[i] = res.Token
			}
		}(i)
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	for i := range errs {
		if errs[i] != nil || tokens[i] == "" || tokens[i] != tokens[0] {
			t.Fatalf("client %d: %v (token shared: %v)", i, errs[i], tokens[i] == tokens[0])
		}
	}
	if got := p.calls.Load(); got != 1 {
		t.Fatalf("%d prompts shown for one scope, want 1", got)
	}
}

func TestPromptsForOtherScopesWaitTheirTurn(t *testing.T) {
	var f *fixture
	p := &scriptedPrompter{}
	p.answer = func(ctx context.Context, req prompt.Request) (string, error) {
		time.Sleep(50 * time.Millisecond)
		return "", prompt.ErrCancelled
	}
	f = newFixture(t, p, true)
	var wg sync.WaitGroup
	for _, s := range []string{"wallet:export", "wallet:sign", "user:update"} {
		wg.Add(1)
		go func(s string) {
			defer wg.Done()
			_, err := f.a.Prompt(callerCtx(), routeAuto, &api.PromptParams{RequestedScopes: []string{s}})
			if !errors.Is(wireError(err), api.ErrCancelled) {
				t.Errorf("%s: %v", s, err)
			}
		}(s)
	}
	wg.Wait()
	if p.calls.Load() != 3 || p.maxOpen.Load() != 1 {
		t.Fatalf("calls %d, at most %d open at once; want 3 and 1", p.calls.Load(), p.maxOpen.Load())
	}
}

func TestWrongAnswerAsksAgain(t *testing.T) {
	var f *fixture
	var tries atomic.Int32
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) {
		if tries.Add(1) == 1 {
			return "000000", nil
		}
		if req.Error == "" {
			t.Error("the retry does not say the first answer was wrong")
		}
		return f.code(0), nil
	}}
	f = newFixture(t, p, true)
	res, err := f.a.Prompt(callerCtx(), routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:sign"}, Reason: "sign\x1b[31m tx"})
	if err != nil || res.Method != api.TOTP || res.SingleUse {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestLastClientHangingUpDismissesThePrompt(t *testing.T) {
	dismissed := make(chan error, 1)
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) {
		<-ctx.Done()
		dismissed <- ctx.Err()
		return "", ctx.Err()
	}}
	f := newFixture(t, p, true)
	ctx, cancel := context.WithCancel(callerCtx())
	done := make(chan error, 1)
	go func() {
		_, err := f.a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-dismissed:
	case <-time.After(5 * time.Second):
		t.Fatal("the prompt stayed up after its only client hung up")
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestPromptBombingIsCooledDown(t *testing.T) {
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) { return "", prompt.ErrCancelled }}
	f := newFixture(t, p, true)
	for i := 0; i < maxCancels; i++ {
		_, err := f.a.Prompt(callerCtx(), routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}})
		if !errors.Is(wireError(err), api.ErrCancelled) {
			t.Fatalf("try %d: %v", i, err)
		}
	}
	_, err := f.a.Prompt(callerCtx(), routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeRateLimited || ae.Data.RetryAfterSeconds <= 0 {
		t.Fatalf("fourth prompt after three cancels: %v", err)
	}
	if p.calls.Load() != maxCancels {
		t.Fatalf("%d prompts shown", p.calls.Load())
	}
	f.advance(cancelWindow + time.Second)
	if _, err := f.a.Prompt(callerCtx(), routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}}); !errors.Is(wireError(err), api.ErrCancelled) {
		t.Fatalf("after the cooldown: %v", err)
	}
}

func TestRouting(t *testing.T) {
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) { return "", prompt.ErrCancelled }}
	f := newFixture(t, p, false)
	ctx := callerCtx()
	// No credential at all: not_enrolled, with a hint.
	_, err := f.a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}})
	if !errors.Is(err, api.ErrNotEnrolled) {
		t.Fatalf("no credentials: %v", err)
	}
	if _, err := f.a.Prompt(ctx, routeMFA, &api.PromptParams{RequestedScopes: []string{"wallet:export"}}); !errors.Is(err, api.ErrNotEnrolled) {
		t.Fatalf("promptMfa without MFA: %v", err)
	}
	f2 := newFixture(t, p, true)
	// With an MFA credential re-authentication may not mint tokens...
	if _, err := f2.a.Prompt(ctx, routeReauth, &api.PromptParams{RequestedScopes: []string{"wallet:export"}}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("promptReauthenticate with MFA enrolled: %v", err)
	}
	// ...and isStepUpRequired offers the MFA methods.
	r, err := f2.a.IsStepUpRequired(ctx, &api.ScopeParams{Scope: "wallet:export"})
	if err != nil || !r.Required || r.DefaultMethod != api.TOTP {
		t.Fatalf("%+v %v", r, err)
	}
	// A scope whose methods exclude TOTP has nothing usable.
	f2.pol = mustParse(t, "scopes:\n  deploy:prod:\n    methods: [passkey]\n")
	if _, err := f2.a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"deploy:prod"}}); !errors.Is(err, api.ErrNotEnrolled) {
		t.Fatalf("methods: [passkey] with only TOTP: %v", err)
	}
	// With --prompter none, 4009 with a hint.
	f2.a.cfg.Prompts = func() prompt.Selector { return prompt.None{} }
	_, err = f2.a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}})
	var ae *api.Error
	if werr := wireError(err); !errors.As(werr, &ae) || ae.Code != api.CodeNoPrompter || ae.Data.Hint == "" {
		t.Fatalf("no prompter: %v", werr)
	}
}

func TestStrictestSettingsForSeveralScopes(t *testing.T) {
	var f *fixture
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) { return f.code(0), nil }}
	f = newFixture(t, p, true)
	res, err := f.a.Prompt(callerCtx(), routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:sign", "wallet:export"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.SingleUse || res.ExpiresAt.Sub(f.clock()) != 5*time.Minute {
		t.Fatalf("single-use %v, life %v; want the strictest: single use, 5m", res.SingleUse, res.ExpiresAt.Sub(f.clock()))
	}
	// Expiry: after its life the token no longer counts.
	f.advance(5*time.Minute + time.Second)
	r, _ := f.a.IsStepUpRequired(callerCtx(), &api.ScopeParams{Scope: "wallet:sign"})
	if !r.Required {
		t.Fatal("an expired token still counts")
	}
}

func TestLockRevokesAndRefuses(t *testing.T) {
	var f *fixture
	var offset atomic.Int64
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) {
		return f.code(time.Duration(offset.Load())), nil
	}}
	f = newFixture(t, p, true)
	ctx := callerCtx()
	if _, err := f.a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:sign"}}); err != nil {
		t.Fatal(err)
	}
	if n := f.a.Lock(ctx, "test"); n != 1 {
		t.Fatalf("revoked %d", n)
	}
	if _, err := f.a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:sign"}}); !errors.Is(err, api.ErrLocked) {
		t.Fatalf("prompt while locked: %v", err)
	}
	offset.Store(int64(30 * time.Second))
	if _, err := f.a.UnlockPrompt(ctx, &api.PromptParams{}); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if f.a.Locked() {
		t.Fatal("still locked")
	}
}

func mustParse(t *testing.T, s string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokensOfOneScopeFallBack(t *testing.T) {
	var f *fixture
	var offset atomic.Int64
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) {
		return f.code(time.Duration(offset.Load())), nil
	}}
	f = newFixture(t, p, true)
	ctx := callerCtx()
	a, err := f.a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export"}})
	if err != nil {
		t.Fatal(err)
	}
	f.advance(time.Second)
	offset.Store(int64(30*time.Second - time.Second))
	b, err := f.a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:export", "wallet:sign"}})
	if err != nil {
		t.Fatal(err)
	}
	f.a.Flush() // stored, as a request's answer waits for
	if got, _ := f.a.GetToken(ctx, &api.ScopeParams{Scope: "wallet:export"}); got == nil || got.Token != b.Token {
		t.Fatal("the newer token is not the one handed out")
	}
	// Consuming it falls back to the other live token of the scope.
	if _, err := f.a.VerifyToken(ctx, &api.VerifyTokenParams{Token: b.Token, Scope: "wallet:export", Consume: true}); err != nil {
		t.Fatal(err)
	}
	got, err := f.a.GetToken(ctx, &api.ScopeParams{Scope: "wallet:export"})
	if err != nil || got.Token != a.Token {
		t.Fatalf("after consuming the newer token: %v", err)
	}
	if _, err := f.a.GetToken(ctx, &api.ScopeParams{Scope: "wallet:sign"}); err == nil {
		t.Fatal("the consumed token is still handed out for its other scope")
	}
}

func TestSessionUnlockKeepsAManualLock(t *testing.T) {
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) { return "", prompt.ErrCancelled }}
	f := newFixture(t, p, true)
	ctx := callerCtx()
	f.a.LockSession(ctx, "logind: screen-lock")
	f.a.UnlockSession(ctx, "logind: screen-unlock")
	if f.a.Locked() {
		t.Fatal("a screen unlock did not lift the screen lock")
	}
	f.a.Lock(ctx, "stepupctl lock")
	f.a.LockSession(ctx, "logind: sleep")
	f.a.UnlockSession(ctx, "logind: resume")
	if !f.a.Locked() {
		t.Fatal("resuming lifted stepupctl lock, which needs a verification")
	}
}

// oneShot is a method whose challenge is spent by its first answer, as
// the wallet's sign-in message is: the answer must name the challenge.
type oneShot struct{ starts atomic.Int32 }

func (m *oneShot) Name() string            { return api.Wallet }
func (m *oneShot) AMR() []string           { return []string{"swk"} }
func (m *oneShot) SingleShot() bool        { return true }
func (m *oneShot) NeedsNoCredential() bool { return true }
func (m *oneShot) Ask(state any) method.Ask {
	return method.Ask{Label: "Signature:", Input: api.InputText, Field: "signature", Text: state.(string)}
}
func (m *oneShot) EnrollStart(context.Context, method.EnrollParams) (any, api.EnrollPayload, error) {
	return nil, nil, errors.New("no")
}
func (m *oneShot) EnrollFinish(context.Context, any, json.RawMessage) (*method.Credential, error) {
	return nil, errors.New("no")
}
func (m *oneShot) Start(context.Context, method.StartRequest) (any, any, error) {
	n := m.starts.Add(1)
	msg := "message " + string(rune('0'+n))
	return msg, map[string]string{"message": msg}, nil
}
func (m *oneShot) Complete(ctx context.Context, state any, creds []*method.Credential, resp json.RawMessage) (*method.Credential, error) {
	var r struct{ Signature string }
	json.Unmarshal(resp, &r)
	if r.Signature != "signed "+state.(string) {
		return nil, method.ErrVerificationFailed
	}
	return nil, nil
}

func TestSingleShotMethodGetsANewChallengeAfterAWrongAnswer(t *testing.T) {
	m := &oneShot{}
	var shown []string
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) {
		shown = append(shown, req.Description)
		if len(shown) == 1 {
			return "wrong", nil
		}
		// Sign the message now on screen.
		i := strings.Index(req.Description, "message ")
		return "signed " + req.Description[i:i+9], nil
	}}
	a, err := New(callerCtx(), Config{Prompts: func() prompt.Selector { return sel{p} }, Methods: []method.Method{m}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(callerCtx())
	defer cancel()
	go a.Run(ctx)
	res, err := a.Prompt(ctx, routeAuto, &api.PromptParams{RequestedScopes: []string{"wallet:sign"}})
	if err != nil || res.Method != api.Wallet {
		t.Fatalf("%+v %v", res, err)
	}
	if m.starts.Load() != 2 || !strings.Contains(shown[1], "message 2") {
		t.Fatalf("%d challenges; second prompt showed %q", m.starts.Load(), shown[1])
	}
}

func TestOpenVerificationsAreBounded(t *testing.T) {
	p := &scriptedPrompter{answer: func(ctx context.Context, req prompt.Request) (string, error) { return "", prompt.ErrCancelled }}
	f := newFixture(t, p, true)
	ctx := callerCtx()
	for i := 0; i < maxOpen; i++ {
		if _, err := f.a.StartVerification(asClient(ctx, 100+i/maxOpenPerClient), &api.StartVerificationParams{Method: api.TOTP, RequestedScopes: []string{"wallet:sign"}}); err != nil {
			t.Fatalf("verification %d: %v", i, err)
		}
	}
	_, err := f.a.StartVerification(asClient(ctx, 1), &api.StartVerificationParams{Method: api.TOTP, RequestedScopes: []string{"wallet:sign"}})
	if !errors.Is(err, api.ErrRateLimited) {
		t.Fatalf("verification %d: %v", maxOpen+1, err)
	}
	f.advance(challengeTTL + time.Second)
	if _, err := f.a.StartVerification(ctx, &api.StartVerificationParams{Method: api.TOTP, RequestedScopes: []string{"wallet:sign"}}); err != nil {
		t.Fatalf("after the others expired: %v", err)
	}
}
