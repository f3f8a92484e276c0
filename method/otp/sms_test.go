package otp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

// hook is a loopback webhook that records what it receives.
type hook struct {
	srv    *httptest.Server
	got    chan hookReq
	status int
}

type hookReq struct {
	ctype, auth, user, pass string
	basic                   bool
	body                    []byte
}

func startHook(t *testing.T) *hook {
	t.Helper()
	h := &hook{got: make(chan hookReq, 10), status: http.StatusOK}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		u, p, ok := r.BasicAuth()
		h.got <- hookReq{ctype: r.Header.Get("Content-Type"), auth: r.Header.Get("Authorization"), user: u, pass: p, basic: ok, body: b}
		w.WriteHeader(h.status)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) wait(t *testing.T) hookReq {
	t.Helper()
	select {
	case r := <-h.got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook was not called")
	}
	panic("unreachable")
}

func smsPolicy(webhook, format, from string) func() *policy.Policy {
	p := policy.Default()
	p.Delivery.SMS = &policy.SMS{Webhook: webhook, Format: format, From: from}
	return func() *policy.Policy { return p }
}

func TestSMSJSON(t *testing.T) {
	h := startHook(t)
	log, logs := observed()
	m := NewSMS(Config{Deps: method.Deps{Policy: smsPolicy(h.srv.URL+"/send", "json", ""), Logger: log}, Secret: password("hook-token")})
	ctx := context.Background()

	st, res, err := m.EnrollStart(ctx, method.EnrollParams{Phone: "+1 (555) 123-4567"})
	if err != nil {
		t.Fatal(err)
	}
	if res.(*api.OTPChallenge).Destination != "+1******4567" {
		t.Fatalf("destination %v", res.(*api.OTPChallenge).Destination)
	}
	r := h.wait(t)
	if r.ctype != "application/json" || r.auth != "Bearer hook-token" {
		t.Fatalf("request %+v", r)
	}
	var body struct{ To, Body string }
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.To != "+15551234567" {
		t.Fatalf("to %q", body.To)
	}
	code := codeRE.FindString(body.Body)
	if code == "" {
		t.Fatalf("no code in %q", body.Body)
	}
	if _, err := m.EnrollFinish(ctx, st, codeResp(wrong(code))); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("wrong code: %v", err)
	}
	cred, err := m.EnrollFinish(ctx, st, codeResp(code))
	if err != nil {
		t.Fatal(err)
	}
	cred.ID = "sms1"
	if cred.Label != "+1******4567" || cred.Method != api.SMSOTP {
		t.Fatalf("credential %+v", cred)
	}

	st, ch, err := m.Start(ctx, method.StartRequest{Creds: []*method.Credential{cred}})
	if err != nil {
		t.Fatal(err)
	}
	if ch.(*api.OTPChallenge).Destination != "+1******4567" {
		t.Fatal(ch)
	}
	if a := m.Ask(st); a.Hint != "A code was sent to +1******4567" || a.Field != "code" {
		t.Fatalf("ask %+v", a)
	}
	r = h.wait(t)
	_ = json.Unmarshal(r.body, &body)
	code = codeRE.FindString(body.Body)
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(code)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Complete(ctx, st, []*method.Credential{cred}, codeResp(code)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("code used twice: %v", err)
	}
	assertNotLogged(t, logs, code, "hook-token")
}

func TestSMSTwilio(t *testing.T) {
	h := startHook(t)
	webhook := h.srv.URL + "/2010-04-01/Accounts/AC123/Messages.json"
	m := NewSMS(Config{Deps: method.Deps{Policy: smsPolicy(webhook, "twilio", "+15550000000"), Logger: zap.NewNop()}, Secret: password("auth-token")})
	ctx := context.Background()
	st, _, err := m.EnrollStart(ctx, method.EnrollParams{Phone: "+447700900123"})
	if err != nil {
		t.Fatal(err)
	}
	r := h.wait(t)
	if r.ctype != "application/x-www-form-urlencoded" || !r.basic || r.user != "AC123" || r.pass != "auth-token" {
		t.Fatalf("request %+v", r)
	}
	f, err := url.ParseQuery(string(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if f.Get("To") != "+447700900123" || f.Get("From") != "+15550000000" {
		t.Fatalf("form %v", f)
	}
	code := codeRE.FindString(f.Get("Body"))
	if _, err := m.EnrollFinish(ctx, st, codeResp(code)); err != nil {
		t.Fatal(err)
	}
}

func TestSMSExpired(t *testing.T) {
	h := startHook(t)
	clk := newClock()
	m := NewSMS(Config{Deps: method.Deps{Policy: smsPolicy(h.srv.URL, "", ""), Logger: zap.NewNop(), Now: clk.Now}})
	st, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Phone: "+15551234567"})
	if err != nil {
		t.Fatal(err)
	}
	r := h.wait(t)
	if r.auth != "" {
		t.Fatalf("auth sent without a token: %q", r.auth)
	}
	var body struct{ Body string }
	_ = json.Unmarshal(r.body, &body)
	clk.Advance(CodeLifetime)
	if _, err := m.EnrollFinish(context.Background(), st, codeResp(codeRE.FindString(body.Body))); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("expired: %v", err)
	}
}

func TestSMSWebhookFailure(t *testing.T) {
	h := startHook(t)
	h.status = http.StatusBadGateway
	m := NewSMS(Config{Deps: method.Deps{Policy: smsPolicy(h.srv.URL, "json", ""), Logger: zap.NewNop()}})
	_, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Phone: "+15551234567"})
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("failed webhook: %v", err)
	}
	r := h.wait(t)
	var body struct{ Body string }
	_ = json.Unmarshal(r.body, &body)
	if code := codeRE.FindString(body.Body); strings.Contains(err.Error(), code) {
		t.Fatal("error carries the code")
	}
}

func TestSMSWebhookMustBeHTTPS(t *testing.T) {
	for _, u := range []string{"http://sms.example.com/send", "https://user:pw@sms.example.com/send", "ftp://x"} {
		m := NewSMS(Config{Deps: method.Deps{Policy: smsPolicy(u, "json", ""), Logger: zap.NewNop()}})
		if _, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Phone: "+15551234567"}); err == nil {
			t.Errorf("webhook %s accepted", u)
		}
	}
	m := NewSMS(Config{Deps: method.Deps{Policy: smsPolicy("", "", ""), Logger: zap.NewNop()}})
	if _, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Phone: "15551234567"}); !errors.Is(err, api.ErrInvalidParams) {
		t.Errorf("phone without +: %v", err)
	}
}

// TestSMSDeadline: a webhook that does not answer is abandoned at the
// context's deadline.
func TestSMSDeadline(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	m := NewSMS(Config{Deps: method.Deps{Policy: smsPolicy(srv.URL, "json", ""), Logger: zap.NewNop()}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := m.EnrollStart(ctx, method.EnrollParams{Phone: "+15551234567"}); err == nil {
		t.Fatal("no error")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("deadline not honoured")
	}
}

// A hostile or broken webhook that echoes the message it was sent (the
// code) in its status line: the code reaches neither the error the
// caller sees nor the log.
func TestSMSWebhookEchoingTheCode(t *testing.T) {
	addr := testenv.ServeLoopback(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		b, _ := io.ReadAll(io.LimitReader(req.Body, 1<<16))
		var body struct{ Body string }
		_ = json.Unmarshal(b, &body)
		fmt.Fprintf(c, "HTTP/1.1 502 rejected: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", body.Body)
	})
	log, logs := observed()
	m := NewSMS(Config{Deps: method.Deps{Policy: smsPolicy("http://"+addr+"/send", "json", ""), Logger: log}})
	_, _, err := m.EnrollStart(context.Background(), method.EnrollParams{Phone: "+15551234567"})
	if err == nil || !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("echoing webhook: %v (want a 502 with the code redacted)", err)
	}
	if codeRE.MatchString(err.Error()) {
		t.Fatalf("the error carries the code: %v", err)
	}
	for _, e := range logs.All() {
		if b, _ := json.Marshal(e.ContextMap()); codeRE.Match(b) || codeRE.MatchString(e.Message) {
			t.Fatalf("the log carries the code: %s %s", e.Message, b)
		}
	}
}
