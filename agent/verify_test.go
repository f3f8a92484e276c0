package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
)

// stubVerifier stands in for the backend assertion checker: it returns
// err, or a fresh jti.
type stubVerifier struct {
	err error
	n   int
}

func (v *stubVerifier) Verify(ctx context.Context, assertion string, scopes []string, cfg policy.ExternalJwt) (string, time.Time, error) {
	if v.err != nil {
		return "", time.Time{}, v.err
	}
	v.n++
	return fmt.Sprintf("jti-%d", v.n), time.Now().Add(time.Minute), nil
}

func newExternalAgent(t *testing.T, v ExternalVerifier) *Agent {
	t.Helper()
	pol := policy.Default()
	pol.ExternalJwt = policy.ExternalJwt{JWKS: "https://backend.example/jwks.json", Subject: "alice"}
	return runAgent(t, Config{
		Store:    keychain.NewMemory(),
		Policy:   func() *policy.Policy { return pol },
		External: v,
	})
}

// A JWK Set that cannot be fetched is the backend's or the agent's
// trouble, not a wrong answer: it must not lock the method out.
func TestExternalInfrastructureFailureIsNotCounted(t *testing.T) {
	v := &stubVerifier{err: errors.New("cannot fetch the JWK Set https://backend.example/jwks.json: connection refused")}
	a := newExternalAgent(t, v)
	ctx := callerCtx()
	p := &api.ExternalAuthParams{Assertion: "x.y.z", RequestedScopes: []string{"wallet:sign"}}
	for i := 0; i < policy.DefaultMaxFailures+1; i++ {
		_, err := a.ExternalAuth(ctx, p)
		if err == nil {
			t.Fatal("accepted")
		}
		if errors.Is(err, api.ErrRateLimited) || errors.Is(err, api.ErrVerificationFailed) {
			t.Fatalf("try %d: %v; want an internal error that does not count as a failure", i+1, err)
		}
	}
	// A refusal still counts.
	v.err = fmt.Errorf("%w: bad signature", method.ErrVerificationFailed)
	if _, err := a.ExternalAuth(ctx, p); !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("refused assertion: %v, want verification_failed", err)
	}
	v.err = nil
	if _, err := a.ExternalAuth(ctx, p); err != nil {
		t.Fatalf("good assertion after infrastructure failures: %v", err)
	}
}

// Two completeVerification calls for one challenge may both get past the
// lookup before the first deletes it; the second must not mint another
// token, even with another valid code.
func TestChallengeCompletesOnce(t *testing.T) {
	f := newFixture(t, &scriptedPrompter{}, true)
	ctx := callerCtx()
	ch, err := f.a.StartVerification(ctx, &api.StartVerificationParams{Method: api.TOTP, RequestedScopes: []string{"wallet:sign"}})
	if err != nil {
		t.Fatal(err)
	}
	c := f.a.challenges.get(ch.ChallengeID, f.a.now()).Val
	// What the two racing requests each do after the lookup.
	if _, err := f.a.finish(ctx, c, []byte(`{"code":"`+f.code(0)+`"}`)); err != nil {
		t.Fatal(err)
	}
	if res, err := f.a.finish(ctx, c, []byte(`{"code":"`+f.code(30*time.Second)+`"}`)); err == nil {
		t.Fatalf("one challenge minted a second token (%s)", res.Method)
	}
}

// barrierMethod is a method whose EnrollFinish returns only once two calls
// are in it, as two racing enrollFinish requests would be.
type barrierMethod struct {
	method.Method // unused methods panic
	mu            sync.Mutex
	n             int
	both          chan struct{}
}

func (m *barrierMethod) Name() string { return api.Wallet }
func (m *barrierMethod) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	return struct{}{}, nil, nil
}
func (m *barrierMethod) EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*method.Credential, error) {
	m.mu.Lock()
	m.n++
	if m.n == 2 {
		close(m.both)
	}
	m.mu.Unlock()
	select {
	case <-m.both:
	case <-time.After(2 * time.Second):
	}
	return &method.Credential{Method: api.Wallet, Secret: json.RawMessage(`{}`)}, nil
}

// One enrollment adds one credential, however many enrollFinish calls
// race for it.
func TestEnrollmentFinishesOnce(t *testing.T) {
	bm := &barrierMethod{both: make(chan struct{})}
	a, err := New(callerCtx(), Config{Store: keychain.NewMemory(), Methods: []method.Method{bm}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(callerCtx())
	defer cancel()
	go a.Run(ctx)
	res, err := a.EnrollStart(ctx, &api.EnrollStartParams{Method: api.Wallet})
	if err != nil {
		t.Fatal(err)
	}
	id := res.EnrollmentID
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.EnrollFinish(ctx, &api.EnrollFinishParams{EnrollmentID: id, Response: json.RawMessage(`{}`)})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
		}
	}
	if n := len(a.ListCredentials().Credentials); n != 1 || ok != 1 {
		t.Fatalf("%d enrollFinish calls succeeded and %d credentials were added; want 1 and 1", ok, n)
	}
}
