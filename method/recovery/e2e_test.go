package recovery

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

func remaining(t *testing.T, a *stepuptest.Agent) int {
	t.Helper()
	creds, err := a.Client.ListCredentials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range creds {
		if c.Method == api.RecoveryCode {
			if c.Remaining == nil {
				t.Fatal("listCredentials has no remaining count for recovery codes")
			}
			return *c.Remaining
		}
	}
	return -1
}

func useCode(ctx context.Context, a *stepuptest.Agent, scope, code string) error {
	ch, err := a.Client.StartVerification(ctx, api.RecoveryCode, []string{scope})
	if err != nil {
		return err
	}
	if string(ch.Challenge) != "{}" {
		return errors.New("challenge is not {}: " + string(ch.Challenge))
	}
	tok, err := a.Client.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code})
	if err != nil {
		return err
	}
	if tok.Method != api.RecoveryCode || tok.Token == "" {
		return errors.New("bad token result")
	}
	return nil
}

// TestE2ERecoveryCodes runs the real agent: the first TOTP enrollment
// returns ten codes; each works once through
// startVerification/completeVerification, listCredentials counts them
// down, and regenerating them needs a credential:update token and
// replaces the old set.
func TestE2ERecoveryCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	a := stepuptest.Start(t, stepuptest.Options{Policy: "limits: {maxFailures: 20, window: 15m}\n"})
	a.EnrollTOTP(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	codes := a.RecoveryCodes
	if len(codes) != Count {
		t.Fatalf("the first MFA enrollment returned %d recovery codes", len(codes))
	}
	if got := remaining(t, a); got != Count {
		t.Fatalf("remaining = %d", got)
	}
	for i, c := range codes[:3] {
		if err := useCode(ctx, a, "wallet:export", c); err != nil {
			t.Fatalf("code %d refused: %v\n%s", i, err, a.Log())
		}
		if err := useCode(ctx, a, "wallet:export", c); !errors.Is(err, api.ErrVerificationFailed) {
			t.Fatalf("code %d reused: %v", i, err)
		}
		if got := remaining(t, a); got != Count-i-1 {
			t.Fatalf("after %d uses remaining = %d", i+1, got)
		}
	}
	if err := useCode(ctx, a, "wallet:export", "aaaa-bbbb-cccc"); !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("wrong code: %v", err)
	}

	// Regenerating needs credential:update.
	if _, err := a.Client.EnrollStart(ctx, api.EnrollStartParams{Method: api.RecoveryCode}); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("regenerating without credential:update: %v", err)
	}
	if _, err := a.StepUp(ctx, []string{"credential:update"}); err != nil {
		t.Fatal(err)
	}
	res, err := a.Client.EnrollStart(ctx, api.EnrollStartParams{Method: api.RecoveryCode})
	if err != nil {
		t.Fatalf("regenerate: %v\n%s", err, a.Log())
	}
	raw := res.RecoveryCodes
	if len(raw) != Count {
		t.Fatalf("enrollStart result %v", res)
	}
	if _, err := a.Client.EnrollFinish(ctx, res.EnrollmentID, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if got := remaining(t, a); got != Count {
		t.Fatalf("after regenerating remaining = %d", got)
	}
	if err := useCode(ctx, a, "wallet:export", codes[5]); !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("an old code after regenerating: %v", err)
	}
	if err := useCode(ctx, a, "wallet:export", raw[0]); err != nil {
		t.Fatalf("a new code: %v", err)
	}

	for _, c := range append(codes, raw[0]) {
		if strings.Contains(a.Log(), c) || strings.Contains(a.Log(), strings.ReplaceAll(c, "-", "")[:8]) {
			t.Fatal("a recovery code is in the agent's log")
		}
	}
}
