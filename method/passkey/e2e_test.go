package passkey

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// TestE2EPasskey runs the real stepup-agent binary and headless Chromium:
// enrollment and step-up through the page the agent serves, with
// enrollStart/enrollFinish and startVerification/completeVerification
// over the agent's socket; then a tampered assertion from a custom UI is
// refused with 4002. On this custom-UI path (--prompter none) the agent
// never opens a browser itself: an xdg-open on its PATH that records its
// calls is never run.
func TestE2EPasskey(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	b := newBrowser(t)
	bin := t.TempDir()
	opened := filepath.Join(bin, "opened")
	if err := os.WriteFile(filepath.Join(bin, "xdg-open"), []byte("#!/bin/sh\necho \"$@\" >> "+opened+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	a := stepuptest.Start(t, stepuptest.Options{Env: []string{"PATH=" + bin + ":" + os.Getenv("PATH")}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := a.Client

	res, err := c.EnrollStart(ctx, api.EnrollStartParams{Method: api.Passkey, Label: "e2e key"})
	if err != nil {
		t.Fatalf("enrollStart: %v", err)
	}
	u := res.URL
	if !strings.HasPrefix(u, "http://localhost:") || res.PublicKey == nil {
		t.Fatalf("enrollStart result %v", res)
	}
	go func() {
		if err := b.navigate(ctx, u); err != nil {
			t.Errorf("navigate: %v", err)
		}
	}()
	fin, err := c.EnrollFinish(ctx, res.EnrollmentID, map[string]any{})
	if err != nil {
		t.Fatalf("enrollFinish: %v\n%s", err, a.Log())
	}
	if fin.Method != api.Passkey || fin.CredentialID == "" {
		t.Fatalf("enrollFinish result %+v", fin)
	}
	if b.pageResult(t) != "ok" {
		t.Fatal("the enrollment page did not show success")
	}

	// Step up through the agent's page: completeVerification {} returns
	// once the page has posted the assertion.
	ch, err := c.StartVerification(ctx, api.Passkey, []string{"wallet:export"})
	if err != nil {
		t.Fatalf("startVerification: %v", err)
	}
	var chal struct {
		URL       string          `json:"url"`
		PublicKey json.RawMessage `json:"publicKey"`
	}
	if err := json.Unmarshal(ch.Challenge, &chal); err != nil || chal.URL == "" || len(chal.PublicKey) == 0 {
		t.Fatalf("challenge %s", ch.Challenge)
	}
	go func() {
		if err := b.navigate(ctx, chal.URL); err != nil {
			t.Errorf("navigate: %v", err)
		}
	}()
	tok, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]any{})
	if err != nil {
		t.Fatalf("completeVerification: %v\n%s", err, a.Log())
	}
	if tok.Method != api.Passkey || tok.Token == "" {
		t.Fatalf("token %+v", tok)
	}
	if b.pageResult(t) != "ok" {
		t.Fatal("the page did not show success")
	}
	claims, err := c.VerifyToken(ctx, tok.Token, "wallet:export", true)
	if err != nil {
		t.Fatalf("verifyToken: %v", err)
	}
	if !strings.Contains(strings.Join(claims.AMR, " "), "hwk") {
		t.Fatalf("amr %v", claims.AMR)
	}

	// A custom UI sends a tampered assertion: refused.
	ch, err = c.StartVerification(ctx, api.Passkey, []string{"wallet:export"})
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(ch.Challenge, &chal)
	ui := newCustomUI(t)
	asr := ui.get(t, b, chal.PublicKey)
	_, err = c.CompleteVerification(ctx, ch.ChallengeID, map[string]json.RawMessage{"credential": tamperSignature(t, asr)})
	if !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("tampered assertion: %v", err)
	}
	// And the genuine one, on a fresh challenge, works.
	ch, err = c.StartVerification(ctx, api.Passkey, []string{"wallet:sign"})
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(ch.Challenge, &chal)
	asr = ui.get(t, b, chal.PublicKey)
	if _, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]json.RawMessage{"credential": asr}); err != nil {
		t.Fatalf("custom-UI assertion: %v\n%s", err, a.Log())
	}

	if b, err := os.ReadFile(opened); err == nil {
		t.Fatalf("the agent opened a browser on the custom-UI path: xdg-open %s", b)
	}

	if strings.Contains(a.Log(), "/c/") {
		t.Fatalf("the agent's log carries a page URL:\n%s", a.Log())
	}

	creds, err := c.ListCredentials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, cr := range creds {
		found = found || (cr.Method == api.Passkey && cr.Label == "e2e key")
	}
	if !found {
		t.Fatalf("credentials %+v", creds)
	}
}
