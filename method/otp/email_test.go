package otp

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

const smtpUser, smtpPass = "stepup", "s3cret-smtp-pass"

func smtpPolicy(s *smtpServer, tlsMode, user string) func() *policy.Policy {
	p := policy.Default()
	p.Delivery.SMTP = &policy.SMTP{Host: s.Host, Port: s.Port, TLS: tlsMode, From: "stepup@example.com", Username: user}
	return func() *policy.Policy { return p }
}

func password(pw string) SecretFunc {
	return func(ctx context.Context) (string, error) { return pw, nil }
}

// enrollEmail enrolls address through the real server and returns the
// credential.
func enrollEmail(t *testing.T, m *Method, s *smtpServer, address string) *method.Credential {
	t.Helper()
	ctx := context.Background()
	st, res, err := m.EnrollStart(ctx, method.EnrollParams{Address: address})
	if err != nil {
		t.Fatalf("enrollStart: %v", err)
	}
	if d := res.(*api.OTPChallenge).Destination; !strings.EqualFold(d, Mask(address)) {
		t.Fatalf("destination %v", res.(*api.OTPChallenge).Destination)
	}
	msg := waitMail(t, s)
	code, _, _ := codeFromMail(t, msg.Data)
	cred, err := m.EnrollFinish(ctx, st, codeResp(code))
	if err != nil {
		t.Fatalf("enrollFinish: %v", err)
	}
	cred.ID = "cred-" + address
	return cred
}

// TestEmailStartTLS is the whole flow against a real SMTP server that
// requires STARTTLS (self-signed, trusted through WithRootCAs) and AUTH.
func TestEmailStartTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	s := startSMTP(t, startTLSSMTP, cert, map[string]string{smtpUser: smtpPass})
	log, logs := observed()
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "starttls", smtpUser), Logger: log}, Secret: password(smtpPass), RootCAs: pool})
	ctx := context.Background()

	cred := enrollEmail(t, m, s, "Alice@Example.COM")
	if cred.Label != "A***@example.com" || cred.Method != api.EmailOTP {
		t.Fatalf("credential %+v", cred)
	}

	st, ch, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	if ch.(*api.OTPChallenge).Destination != "A***@example.com" {
		t.Fatalf("challenge %v", ch)
	}
	ask := m.Ask(st)
	if ask.Field != "code" || ask.Hint != "A code was sent to A***@example.com" {
		t.Fatalf("ask %+v", ask)
	}
	msg := waitMail(t, s)
	if !msg.TLS || msg.Auth != smtpUser {
		t.Fatalf("message sent without TLS or auth: tls=%v auth=%q", msg.TLS, msg.Auth)
	}
	if len(msg.To) != 1 || msg.To[0] != "Alice@example.com" {
		t.Fatalf("recipients %v", msg.To)
	}
	code, hdr, _ := codeFromMail(t, msg.Data)
	if strings.Contains(hdr.Header.Get("Subject"), code) {
		t.Fatal("the code is in the subject line")
	}

	// A wrong code is refused, and the right one still works after it.
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(wrong(code))); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("wrong code: %v", err)
	}
	got, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(code[:3]+" "+code[3:]))
	if err != nil || got.ID != cred.ID {
		t.Fatalf("right code: %v", err)
	}
	// Used twice: refused.
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(code)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("code used twice: %v", err)
	}
	assertNotLogged(t, logs, code, smtpPass)
}

func TestEmailImplicitTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	s := startSMTP(t, implicitTLSSMTP, cert, map[string]string{smtpUser: smtpPass})
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "tls", smtpUser), Logger: zap.NewNop()}, Secret: password(smtpPass), RootCAs: pool})
	cred := enrollEmail(t, m, s, "bob@example.org")
	if cred.Label != "b***@example.org" {
		t.Fatal(cred.Label)
	}
}

// TestEmailUntrustedCertificate: without the test's RootCAs the
// self-signed certificate is refused and no mail goes out.
func TestEmailUntrustedCertificate(t *testing.T) {
	cert, _ := selfSigned(t)
	s := startSMTP(t, startTLSSMTP, cert, nil)
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "starttls", ""), Logger: zap.NewNop()}})
	if _, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Address: "a@example.com"}); err == nil {
		t.Fatal("sent through an untrusted certificate")
	}
	noMail(t, s)
}

// TestEmailStartTLSRequired: with tls starttls, a server that does not
// offer STARTTLS gets nothing, not even the password.
func TestEmailStartTLSRequired(t *testing.T) {
	s := startSMTP(t, plainSMTP, nil, map[string]string{smtpUser: smtpPass})
	log, logs := observed()
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "starttls", smtpUser), Logger: log}, Secret: password(smtpPass)})
	_, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Address: "a@example.com"})
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("sent without STARTTLS: %v", err)
	}
	noMail(t, s)
	assertNotLogged(t, logs, smtpPass)
}

// TestEmailNoTLSLoopback: tls none is allowed to a loopback relay, without
// authentication; to any other host it is refused.
func TestEmailNoTLSLoopback(t *testing.T) {
	s := startSMTP(t, plainSMTP, nil, nil)
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "none", ""), Logger: zap.NewNop()}})
	cred := enrollEmail(t, m, s, "carol@example.net")
	if cred == nil {
		t.Fatal("no credential")
	}

	p := policy.Default()
	p.Delivery.SMTP = &policy.SMTP{Host: "smtp.example.com", Port: 25, TLS: "none", From: "x@example.com"}
	m2 := NewEmail(Config{Deps: method.Deps{Policy: func() *policy.Policy { return p }, Logger: zap.NewNop()}})
	_, _, err := m2.EnrollStart(context.Background(), method.EnrollParams{Address: "a@example.com"})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("tls none to a remote host: %v", err)
	}
}

func TestEmailWrongPassword(t *testing.T) {
	cert, pool := selfSigned(t)
	s := startSMTP(t, startTLSSMTP, cert, map[string]string{smtpUser: smtpPass})
	log, logs := observed()
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "starttls", smtpUser), Logger: log}, Secret: password("not-the-password"), RootCAs: pool})
	_, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Address: "a@example.com"})
	if err == nil {
		t.Fatal("sent with a wrong password")
	}
	if strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("error carries the password: %v", err)
	}
	assertNotLogged(t, logs, "not-the-password")
	noMail(t, s)
}

func TestEmailNotConfigured(t *testing.T) {
	m := NewEmail(Config{Deps: method.Deps{Policy: policy.Default, Logger: zap.NewNop()}})
	_, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Address: "a@example.com"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Data.Hint == "" {
		t.Fatalf("unconfigured delivery: %v", err)
	}
	if _, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Address: "not an address"}); !errors.Is(err, api.ErrInvalidParams) {
		t.Fatalf("bad address: %v", err)
	}
}

// TestEmailExpiry uses an injected clock: a code is refused after ten
// minutes.
func TestEmailExpiry(t *testing.T) {
	s := startSMTP(t, plainSMTP, nil, nil)
	clk := newClock()
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "none", ""), Logger: zap.NewNop(), Now: clk.Now}})
	cred := enrollEmail(t, m, s, "dave@example.com")
	ctx := context.Background()

	st, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	code, _, _ := codeFromMail(t, waitMail(t, s).Data)
	clk.Advance(CodeLifetime + time.Second)
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(code)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("expired code: %v", err)
	}

	// Just inside the lifetime it works.
	st, _, err = m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	code, _, _ = codeFromMail(t, waitMail(t, s).Data)
	clk.Advance(CodeLifetime - time.Second)
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(code)); err != nil {
		t.Fatalf("code within its lifetime: %v", err)
	}
}

// TestEmailTriesCap: after MaxTries wrong answers the code is dropped, even
// the right one is refused.
func TestEmailTriesCap(t *testing.T) {
	s := startSMTP(t, plainSMTP, nil, nil)
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "none", ""), Logger: zap.NewNop()}})
	cred := enrollEmail(t, m, s, "erin@example.com")
	ctx := context.Background()
	st, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	code, _, _ := codeFromMail(t, waitMail(t, s).Data)
	for i := 0; i < MaxTries; i++ {
		if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(wrong(code))); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatal(err)
		}
	}
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(code)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("right code after %d wrong ones: %v", MaxTries, err)
	}
}

// TestEmailResend: a Start within ResendInterval sends nothing and the
// code already sent works; after it a new code is sent and the old one
// stops working.
func TestEmailResend(t *testing.T) {
	s := startSMTP(t, plainSMTP, nil, nil)
	clk := newClock()
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "none", ""), Logger: zap.NewNop(), Now: clk.Now}})
	cred := enrollEmail(t, m, s, "frank@example.com")
	ctx := context.Background()

	st1, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	code1, _, _ := codeFromMail(t, waitMail(t, s).Data)
	clk.Advance(ResendInterval / 2)
	st2, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	noMail(t, s)
	// The second challenge takes the code that was sent for the first.
	if _, err := m.Complete(ctx, st2, []*method.Credential{cred}, codeResp(code1)); err != nil {
		t.Fatalf("reused code: %v", err)
	}
	if _, err := m.Complete(ctx, st1, []*method.Credential{cred}, codeResp(code1)); err == nil {
		t.Fatal("a consumed code worked again through the first challenge")
	}

	st3, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	code3, _, _ := codeFromMail(t, waitMail(t, s).Data)
	clk.Advance(ResendInterval + time.Second)
	st4, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	code4, _, _ := codeFromMail(t, waitMail(t, s).Data)
	if code3 != code4 {
		if _, err := m.Complete(ctx, st3, []*method.Credential{cred}, codeResp(code3)); err == nil {
			t.Fatal("a superseded code still works")
		}
	}
	if _, err := m.Complete(ctx, st4, []*method.Credential{cred}, codeResp(code4)); err != nil {
		t.Fatalf("new code: %v", err)
	}
}

// TestEmailRemovedCredential: a code sent for a credential that was removed
// meanwhile does not verify.
func TestEmailRemovedCredential(t *testing.T) {
	s := startSMTP(t, plainSMTP, nil, nil)
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "none", ""), Logger: zap.NewNop()}})
	cred := enrollEmail(t, m, s, "gina@example.com")
	ctx := context.Background()
	st, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	code, _, _ := codeFromMail(t, waitMail(t, s).Data)
	if _, err := m.Complete(ctx, st, nil, codeResp(code)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("removed credential: %v", err)
	}
}

// TestEnrollCodeDoesNotVerify: a code sent for enrollment is not a step-up
// code, and the other way round.
func TestEnrollCodeDoesNotVerify(t *testing.T) {
	s := startSMTP(t, plainSMTP, nil, nil)
	m := NewEmail(Config{Deps: method.Deps{Policy: smtpPolicy(s, "none", ""), Logger: zap.NewNop()}})
	cred := enrollEmail(t, m, s, "hank@example.com")
	ctx := context.Background()
	if _, _, err := m.EnrollStart(ctx, method.EnrollParams{Address: "hank@example.com"}); err != nil {
		t.Fatal(err)
	}
	enrollCode, _, _ := codeFromMail(t, waitMail(t, s).Data)
	st, _, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	code, _, _ := codeFromMail(t, waitMail(t, s).Data)
	if enrollCode != code {
		if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(enrollCode)); err == nil {
			t.Fatal("an enrollment code verified a step-up")
		}
	}
}

func TestMask(t *testing.T) {
	for in, want := range map[string]string{
		"alice@example.com": "a***@example.com",
		"+15551234567":      "+1******4567",
		"+447700900123":     "+4*******0123",
		"é@example.com":     "é***@example.com",
	} {
		if got := Mask(in); got != want {
			t.Errorf("Mask(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCodesAreUniform(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		c, err := newCode()
		if err != nil {
			t.Fatal(err)
		}
		if len(c) != CodeDigits || strings.Trim(c, "0123456789") != "" {
			t.Fatalf("code %q", c)
		}
		seen[c] = true
	}
	if len(seen) < 190 {
		t.Fatalf("only %d distinct codes in 200", len(seen))
	}
}

// TestSMTPDeadline: a mail server that greets and then says nothing more
// is abandoned at the context's deadline.
func TestSMTPDeadline(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	addr := testenv.ServeLoopback(t, func(c net.Conn) {
		c.Write([]byte("220 localhost ESMTP\r\n"))
		<-done
	})
	_, port, _ := net.SplitHostPort(addr)
	p := policy.Default()
	p.Delivery.SMTP = &policy.SMTP{Host: "127.0.0.1", Port: atoi(port), TLS: "none", From: "stepup@example.com"}
	m := NewEmail(Config{Deps: method.Deps{Policy: func() *policy.Policy { return p }, Logger: zap.NewNop()}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := m.EnrollStart(ctx, method.EnrollParams{Address: "a@example.com"}); err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("deadline not honoured: %v", d)
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
