package recovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fast returns a Method with cheap argon2 parameters, so the tests that
// check many codes stay quick under the race detector.
func fast(t *testing.T) (*Method, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	m := New(Config{Deps: method.Deps{Logger: zap.New(core)}})
	m.params = Params{Time: 1, Memory: 64, Threads: 1, KeyLen: 32}
	return m, logs
}

func codeResp(c string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"code": c})
	return b
}

func TestEachCodeWorksOnce(t *testing.T) {
	ctx := context.Background()
	m, logs := fast(t)
	cred, codes, err := m.Generate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cred.ID = "rc1"
	if len(codes) != Count {
		t.Fatalf("got %d codes", len(codes))
	}
	shape := regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}$`)
	seen := map[string]bool{}
	for _, c := range codes {
		if !shape.MatchString(c) {
			t.Fatalf("code %q has the wrong shape", c)
		}
		if seen[c] {
			t.Fatal("duplicate code")
		}
		seen[c] = true
		if strings.Contains(string(cred.Secret), strings.ReplaceAll(c, "-", "")) {
			t.Fatal("a code is stored in clear")
		}
	}
	if got := m.Remaining(cred); got != Count {
		t.Fatalf("Remaining = %d, want %d", got, Count)
	}
	creds := []*method.Credential{cred}
	for i, c := range codes {
		if _, _, err := m.Start(ctx, method.StartRequest{Creds: creds}); err != nil {
			t.Fatalf("Start with %d left: %v", m.Remaining(creds[0]), err)
		}
		// The user may type it in upper case, with spaces.
		typed := c
		if i%2 == 1 {
			typed = strings.ToUpper(strings.ReplaceAll(c, "-", " "))
		}
		got, err := m.Complete(ctx, nil, creds, codeResp(typed))
		if err != nil {
			t.Fatalf("code %d refused: %v", i, err)
		}
		if got.ID != "rc1" {
			t.Fatalf("matched credential %q", got.ID)
		}
		if r := m.Remaining(got); r != Count-i-1 {
			t.Fatalf("after %d uses Remaining = %d", i+1, r)
		}
		creds = []*method.Credential{got}
		// The same code again fails.
		if _, err := m.Complete(ctx, nil, creds, codeResp(c)); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("reused code: err = %v", err)
		}
	}
	if _, _, err := m.Start(ctx, method.StartRequest{Creds: creds}); !errors.Is(err, api.ErrNotEnrolled) {
		t.Fatalf("Start with none left: %v", err)
	}
	for _, e := range logs.All() {
		for _, c := range codes {
			if strings.Contains(e.Message+fmt.Sprint(e.ContextMap()), strings.ReplaceAll(c, "-", "")[:8]) {
				t.Fatalf("a code was logged: %v", e)
			}
		}
	}
}

func TestWrongCodes(t *testing.T) {
	ctx := context.Background()
	m, _ := fast(t)
	cred, codes, err := m.Generate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	creds := []*method.Credential{cred}
	// A code of another set.
	_, other, _ := m.Generate(ctx)
	for _, bad := range []string{other[0], "", "abcd", codes[0] + "0", "ûûûû-ûûûû-ûûûû", `{"x":1}`} {
		if _, err := m.Complete(ctx, nil, creds, codeResp(bad)); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("code %q: err = %v", bad, err)
		}
	}
	if _, err := m.Complete(ctx, nil, creds, json.RawMessage(`not json`)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("bad json: err = %v", err)
	}
	if m.Remaining(cred) != Count {
		t.Fatal("a failure used a code")
	}
	// Crockford's look-alikes: i, l for 1 and o for 0.
	c := codes[0]
	alias := strings.NewReplacer("1", "l", "0", "O").Replace(c)
	if _, err := m.Complete(ctx, nil, creds, codeResp(alias)); err != nil {
		t.Fatalf("look-alike spelling %q of a code refused: %v", alias, err)
	}
}

func TestEnrollRegenerates(t *testing.T) {
	ctx := context.Background()
	m, _ := fast(t)
	st, res, err := m.EnrollStart(ctx, method.EnrollParams{})
	if err != nil {
		t.Fatal(err)
	}
	codes := res.(*api.RecoveryEnrollment).RecoveryCodes
	if len(codes) != Count {
		t.Fatalf("result %v", res)
	}
	cred, err := m.EnrollFinish(ctx, st, json.RawMessage(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if cred.Method != api.RecoveryCode || m.Remaining(cred) != Count {
		t.Fatalf("credential %+v", cred)
	}
	if _, err := m.Complete(ctx, nil, []*method.Credential{cred}, codeResp(codes[9])); err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnrollFinish(ctx, nil, nil); err == nil {
		t.Fatal("EnrollFinish without a state succeeded")
	}
}

// TestDefaultCost checks the figure quoted in DefaultParams: a failed
// check hashes all ten codes with the real parameters.
func TestDefaultCost(t *testing.T) {
	ctx := context.Background()
	m := New(Config{})
	cred, _, err := m.Generate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := m.Complete(ctx, nil, []*method.Credential{cred}, codeResp("0000-0000-0000")); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatal(err)
	}
	t.Logf("a failed check over %d codes took %v (argon2id t=%d m=%dKiB p=%d)", Count, time.Since(start),
		DefaultParams.Time, DefaultParams.Memory, DefaultParams.Threads)
}
