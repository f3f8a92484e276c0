package otp

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/ptytest"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// These tests run the real stepup-agent binary (stepuptest) and talk to it
// over its socket: enrollStart/enrollFinish and startVerification/
// completeVerification, with codes delivered by a real SMTP server
// (go-smtp, STARTTLS with a self-signed certificate the agent trusts
// through SSL_CERT_FILE) and a loopback webhook.

func e2eCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestE2EEmailOTP(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cert, _ := selfSigned(t)
	s := startSMTP(t, startTLSSMTP, cert, nil)
	pemPath := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	pol := fmt.Sprintf("delivery:\n  smtp: {host: 127.0.0.1, port: %d, tls: starttls, from: stepup@example.com}\n", s.Port)
	a := stepuptest.Start(t, stepuptest.Options{Policy: pol, Env: []string{"SSL_CERT_FILE=" + pemPath}})
	ctx := e2eCtx(t)
	c := a.Client

	res, err := c.EnrollStart(ctx, api.EnrollStartParams{Method: api.EmailOTP, Address: "alice@example.com"})
	if err != nil {
		t.Fatalf("enrollStart: %v", err)
	}
	if res.Destination != "a***@example.com" {
		t.Fatalf("enrollStart result %v", res)
	}
	m := waitMail(t, s)
	if !m.TLS {
		t.Fatal("the agent sent the code without STARTTLS")
	}
	code, _, _ := codeFromMail(t, m.Data)
	fin, err := c.EnrollFinish(ctx, res.EnrollmentID, map[string]string{"code": code})
	if err != nil {
		t.Fatalf("enrollFinish: %v", err)
	}
	if fin.Method != api.EmailOTP || fin.CredentialID == "" {
		t.Fatalf("enrollFinish result %+v", fin)
	}
	codes := []string{code}

	ch, err := c.StartVerification(ctx, api.EmailOTP, []string{"wallet:export"})
	if err != nil {
		t.Fatalf("startVerification: %v", err)
	}
	var chal struct{ Destination string }
	if err := json.Unmarshal(ch.Challenge, &chal); err != nil || chal.Destination != "a***@example.com" {
		t.Fatalf("challenge %s", ch.Challenge)
	}
	code, _, _ = codeFromMail(t, waitMail(t, s).Data)
	codes = append(codes, code)

	// Wrong code: 4002, and the challenge stays open.
	_, err = c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": wrong(code)})
	if !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("wrong code: %v", err)
	}
	tok, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code})
	if err != nil {
		t.Fatalf("completeVerification: %v", err)
	}
	if tok.Method != api.EmailOTP || tok.Token == "" {
		t.Fatalf("token result %+v", tok)
	}
	claims, err := c.VerifyToken(ctx, tok.Token, "wallet:export", true)
	if err != nil {
		t.Fatalf("verifyToken: %v", err)
	}
	if !strings.Contains(fmt.Sprint(claims.AMR), "mail") {
		t.Fatalf("amr %v", claims.AMR)
	}

	// The code again: refused.
	if _, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code}); !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("code used twice: %v", err)
	}
	ch2, err := c.StartVerification(ctx, api.EmailOTP, []string{"wallet:export"})
	if err != nil {
		t.Fatal(err)
	}
	code2, _, _ := codeFromMail(t, waitMail(t, s).Data)
	codes = append(codes, code2)
	if code2 != code {
		if _, err := c.CompleteVerification(ctx, ch2.ChallengeID, map[string]string{"code": code}); !errors.Is(err, api.ErrVerificationFailed) {
			t.Fatalf("old code on a new challenge: %v", err)
		}
	}

	// No code in the agent's log.
	log := a.Log()
	for _, cd := range codes {
		if strings.Contains(log, cd) {
			t.Fatalf("the agent's log carries a code:\n%s", log)
		}
	}
}

func TestE2ESMSOTP(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	h := startHook(t)
	pol := fmt.Sprintf("delivery:\n  sms: {webhook: %q, format: twilio, from: \"+15550000000\"}\n", h.srv.URL+"/2010-04-01/Accounts/AC1/Messages.json")
	a := stepuptest.Start(t, stepuptest.Options{Policy: pol})
	ctx := e2eCtx(t)
	c := a.Client

	res, err := c.EnrollStart(ctx, api.EnrollStartParams{Method: api.SMSOTP, Phone: "+15551234567"})
	if err != nil {
		t.Fatalf("enrollStart: %v", err)
	}
	if res.Destination != "+1******4567" {
		t.Fatalf("enrollStart result %v", res)
	}
	codeOf := func() string {
		r := h.wait(t)
		if r.ctype != "application/x-www-form-urlencoded" {
			t.Fatalf("content type %q", r.ctype)
		}
		b := string(r.body)
		m := codeRE.FindStringSubmatch(strings.ReplaceAll(b, "+", " "))
		if m == nil {
			t.Fatalf("no code in %q", b)
		}
		return m[1]
	}
	code := codeOf()
	if _, err := c.EnrollFinish(ctx, res.EnrollmentID, map[string]string{"code": wrong(code)}); !errors.Is(err, api.ErrVerificationFailed) {
		t.Fatalf("wrong enrollment code: %v", err)
	}
	if _, err := c.EnrollFinish(ctx, res.EnrollmentID, map[string]string{"code": code}); err != nil {
		t.Fatalf("enrollFinish: %v", err)
	}

	ch, err := c.StartVerification(ctx, api.SMSOTP, []string{"wallet:sign"})
	if err != nil {
		t.Fatalf("startVerification: %v", err)
	}
	if !strings.Contains(string(ch.Challenge), "+1******4567") {
		t.Fatalf("challenge %s", ch.Challenge)
	}
	code = codeOf()
	tok, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code})
	if err != nil {
		t.Fatalf("completeVerification: %v", err)
	}
	if tok.Method != api.SMSOTP {
		t.Fatalf("token %+v", tok)
	}
	if strings.Contains(a.Log(), code) {
		t.Fatal("the agent's log carries a code")
	}
}

// TestE2EEmailOTPStepupctl: stepupctl on a terminal, with an agent that
// cannot prompt, steps up with an emailed code through
// startVerification/completeVerification, and shows what the agent's
// ask says (the label, and where the code went), not a text of its own.
func TestE2EEmailOTPStepupctl(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	s := startSMTP(t, plainSMTP, nil, nil)
	pol := fmt.Sprintf("delivery:\n  smtp: {host: 127.0.0.1, port: %d, tls: none, from: stepup@example.com}\n", s.Port)
	a := stepuptest.Start(t, stepuptest.Options{Policy: pol})
	ctl := stepuptest.Build(t, "stepupctl")
	ctx := e2eCtx(t)
	c := a.Client

	res, err := c.EnrollStart(ctx, api.EnrollStartParams{Method: api.EmailOTP, Address: "alice@example.com"})
	if err != nil {
		t.Fatalf("enrollStart: %v", err)
	}
	code, _, _ := codeFromMail(t, waitMail(t, s).Data)
	if _, err := c.EnrollFinish(ctx, res.EnrollmentID, map[string]string{"code": code}); err != nil {
		t.Fatalf("enrollFinish: %v", err)
	}

	// The ask on the wire.
	ch, err := c.StartVerification(ctx, api.EmailOTP, []string{"wallet:sign"})
	if err != nil {
		t.Fatalf("startVerification: %v", err)
	}
	want := api.Ask{Label: "Email code:", Input: api.InputDigits, Field: "code", Hint: "A code was sent to a***@example.com"}
	if ch.Ask != want {
		t.Fatalf("startVerification's ask is %+v, want %+v", ch.Ask, want)
	}
	code, _, _ = codeFromMail(t, waitMail(t, s).Data)
	if _, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{ch.Ask.Field: code}); err != nil {
		t.Fatalf("completeVerification with the ask's field: %v", err)
	}

	// stepupctl renders it on its terminal.
	cmd := exec.Command(ctl, "prompt", "--method", "email_otp", "wallet:export")
	cmd.Env = append(a.Env(), "TERM=xterm")
	p := ptytest.Start(t, cmd)
	p.Expect(`stepup-agent: step up for wallet:export with email_otp\.`)
	p.Expect(`A code was sent to a\*\*\*@example\.com`)
	p.Expect(`Email code: `)
	code, _, _ = codeFromMail(t, waitMail(t, s).Data)
	p.Write(wrong(code) + "\n")
	p.Expect(`email_otp verification failed: wrong, expired or already used code; try again\.`)
	p.AnswerSecret(code, `Stepped up with email_otp for wallet:export: single-use token`)
}
