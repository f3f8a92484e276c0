package passkey

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func testLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// enroll registers a passkey through the agent's page in the browser.
func enroll(t *testing.T, m *Method, b *browser) *method.Credential {
	t.Helper()
	ctx := context.Background()
	st, res, err := m.EnrollStart(ctx, method.EnrollParams{Label: "test key"})
	if err != nil {
		t.Fatal(err)
	}
	u := res.(*api.PasskeyCeremony).URL
	if !strings.HasPrefix(u, "http://localhost:") || !strings.Contains(u, "/c/") {
		t.Fatalf("url %q", u)
	}
	var pk map[string]any
	if err := json.Unmarshal(res.(*api.PasskeyCeremony).PublicKey, &pk); err != nil {
		t.Fatal(err)
	}
	sel := pk["authenticatorSelection"].(map[string]any)
	if sel["residentKey"] != "required" || sel["userVerification"] != "required" || pk["rp"].(map[string]any)["id"] != "localhost" {
		t.Fatalf("creation options %v", pk)
	}
	go func() {
		if err := b.navigate(ctx, u); err != nil {
			t.Errorf("navigate: %v", err)
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cred, err := m.EnrollFinish(wctx, st, json.RawMessage(`{}`))
	if err != nil {
		t.Fatalf("enrollFinish: %v", err)
	}
	if got := b.pageResult(t); got != "ok" {
		t.Fatalf("page result %q", got)
	}
	cred.ID = "pk1"
	var s Secret
	if err := json.Unmarshal(cred.Secret, &s); err != nil {
		t.Fatal(err)
	}
	if cred.Label != "test key" || !s.Credential.Flags.UserVerified || len(s.UserHandle) != 32 || s.RPID != "localhost" {
		t.Fatalf("credential %+v secret %+v", cred, s)
	}
	return cred
}

// verifyInPage runs a verification the way the agent's prompt does:
// Start, Wait (which opens the page), Complete with Wait's response.
func verifyInPage(t *testing.T, m *Method, creds []*method.Credential) (*method.Credential, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, ch, err := m.Start(ctx, creds)
	if err != nil {
		t.Fatal(err)
	}
	c := ch.(*api.PasskeyCeremony)
	if c.URL != st.(*ceremony).url || c.PublicKey == nil {
		t.Fatalf("challenge %v", c)
	}
	if a := m.Ask(st); a.Field != "" || !strings.Contains(a.Description, st.(*ceremony).url) {
		t.Fatalf("ask %+v", a)
	}
	resp, err := m.Wait(ctx, st)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return m.Complete(ctx, st, creds, resp)
}

// wantReason checks that the last refusal logged names want.
func wantReason(t *testing.T, logs *observer.ObservedLogs, want string) {
	t.Helper()
	all := logs.FilterMessage("passkey assertion refused").All()
	if len(all) == 0 {
		t.Fatal("no refusal logged")
	}
	if r, _ := all[len(all)-1].ContextMap()["reason"].(string); !strings.Contains(r, want) {
		t.Fatalf("refused for %q, want %q", r, want)
	}
}

func signCount(t *testing.T, c *method.Credential) uint32 {
	t.Helper()
	var s Secret
	if err := json.Unmarshal(c.Secret, &s); err != nil {
		t.Fatal(err)
	}
	return s.Credential.Authenticator.SignCount
}

// TestPasskeyChromium is the whole method against headless Chromium with
// a CDP virtual authenticator: registration and assertion through the
// agent's page, the custom-UI path, a bogus signature, a tampered
// signature, replays and a counter regression.
func TestPasskeyChromium(t *testing.T) {
	b := newBrowser(t)
	log, logs := testLogger()
	m := New(method.Deps{Logger: log}, WithOpener(b.opener(t)), WithIdleTimeout(200*time.Millisecond))
	defer m.Close()

	cred := enroll(t, m, b)
	creds := []*method.Credential{cred}

	// Assertion through the agent's page.
	got, err := verifyInPage(t, m, creds)
	if err != nil {
		t.Fatalf("assertion through the page: %v", err)
	}
	if b.pageResult(t) != "ok" {
		t.Fatal("page did not show success")
	}
	n1 := signCount(t, got)
	cred = got
	creds = []*method.Credential{cred}

	// Again: the counter moves on.
	got, err = verifyInPage(t, m, creds)
	if err != nil {
		t.Fatalf("second assertion: %v", err)
	}
	if n2 := signCount(t, got); n2 <= n1 && !(n1 == 0 && n2 == 0) {
		t.Fatalf("sign count %d after %d", n2, n1)
	}
	cred = got
	creds = []*method.Credential{cred}

	t.Run("bogus signature through the page", func(t *testing.T) {
		bogus := true
		call(t, b, cdpwebauthn.SetResponseOverrideBits, cdpwebauthn.SetResponseOverrideBitsParams{AuthenticatorID: b.authID, IsBogusSignature: &bogus})
		defer call(t, b, cdpwebauthn.SetResponseOverrideBits, cdpwebauthn.SetResponseOverrideBitsParams{AuthenticatorID: b.authID})
		if _, err := verifyInPage(t, m, creds); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("bogus signature: %v", err)
		}
		if r := b.pageResult(t); r != "refused" {
			t.Fatalf("page result %q", r)
		}
		wantReason(t, logs, "signature")
	})

	ui := newCustomUI(t)
	ctx := context.Background()

	t.Run("custom UI, tampered signature", func(t *testing.T) {
		st, ch, err := m.Start(ctx, creds)
		if err != nil {
			t.Fatal(err)
		}
		a := ui.get(t, b, ch.(*api.PasskeyCeremony).PublicKey)
		if _, err := m.Complete(ctx, st, creds, credResp(tamperSignature(t, a))); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("tampered signature: %v", err)
		}
		wantReason(t, logs, "signature")
		// The ceremony is spent: even the genuine assertion is refused now.
		if _, err := m.Complete(ctx, st, creds, credResp(a)); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("second answer to a spent ceremony: %v", err)
		}
	})

	var good json.RawMessage
	t.Run("custom UI and replay", func(t *testing.T) {
		st, ch, err := m.Start(ctx, creds)
		if err != nil {
			t.Fatal(err)
		}
		good = ui.get(t, b, ch.(*api.PasskeyCeremony).PublicKey)
		got, err := m.Complete(ctx, st, creds, credResp(good))
		if err != nil {
			t.Fatalf("custom UI assertion: %v", err)
		}
		cred = got
		creds = []*method.Credential{cred}
		// Replayed into the same ceremony.
		if _, err := m.Complete(ctx, st, creds, credResp(good)); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("replay into the same ceremony: %v", err)
		}
		// Replayed into a fresh ceremony (another challenge).
		st2, _, err := m.Start(ctx, creds)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Complete(ctx, st2, creds, credResp(good)); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("replay into a fresh ceremony: %v", err)
		}
		wantReason(t, logs, "challenge")
	})

	t.Run("counter regression", func(t *testing.T) {
		// Clone the authenticator's credential with its counter reset:
		// a copy of the key that has signed less than the original.
		var s Secret
		_ = json.Unmarshal(cred.Secret, &s)
		vc := call(t, b, cdpwebauthn.GetCredential, cdpwebauthn.GetCredentialParams{AuthenticatorID: b.authID, CredentialID: s.Credential.ID}).Credential
		if vc == nil {
			t.Fatal("credential not in the virtual authenticator")
		}
		if s.Credential.Authenticator.SignCount == 0 {
			t.Skip("the virtual authenticator keeps no counter")
		}
		clone := addCredentialParams{AuthenticatorID: b.authID, Credential: virtualCredential{
			CredentialID: vc.CredentialID, IsResidentCredential: vc.IsResidentCredential, RpID: vc.RpID,
			PrivateKey: vc.PrivateKey, UserHandle: vc.UserHandle, SignCount: 0,
		}}
		call(t, b, cdpwebauthn.RemoveCredential, cdpwebauthn.RemoveCredentialParams{AuthenticatorID: b.authID, CredentialID: vc.CredentialID})
		call(t, b, addCredential, clone)
		_, err := verifyInPage(t, m, creds)
		if !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("counter regression: %v", err)
		}
		wantReason(t, logs, "sign counter did not increase")
	})

	t.Run("stored clone warning", func(t *testing.T) {
		var s Secret
		_ = json.Unmarshal(cred.Secret, &s)
		s.Credential.Authenticator.CloneWarning = true
		raw, _ := json.Marshal(s)
		c2 := *cred
		c2.Secret = raw
		if _, err := verifyInPage(t, m, []*method.Credential{&c2}); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("credential with a clone warning: %v", err)
		}
	})

	// Nothing signed or secret in the log.
	for _, e := range logs.All() {
		enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		buf, _ := enc.EncodeEntry(e.Entry, e.Context)
		line := buf.String()
		if strings.Contains(line, "/c/") {
			t.Fatalf("log line carries a page URL: %s", line)
		}
		if good != nil {
			var a struct {
				Response struct {
					Signature string `json:"signature"`
				} `json:"response"`
			}
			_ = json.Unmarshal(good, &a)
			if a.Response.Signature != "" && strings.Contains(line, a.Response.Signature) {
				t.Fatalf("log line carries a signature: %s", line)
			}
		}
	}

	// The server goes away once idle.
	deadline := time.Now().Add(5 * time.Second)
	for m.Port() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if m.Port() != 0 {
		t.Fatal("page server still running after the idle timeout")
	}
}

// TestPageServer checks the page server's rules with a plain HTTP client:
// Host pinned to localhost:PORT, one GET, strict CSP, same-origin JSON
// POSTs of bounded size, loopback only, stop when idle.
func TestPageServer(t *testing.T) {
	m := New(method.Deps{Logger: zap.NewNop()}, WithIdleTimeout(100*time.Millisecond), WithOpener(func(context.Context, string) error { return nil }))
	defer m.Close()
	ctx := context.Background()
	st, res, err := m.EnrollStart(ctx, method.EnrollParams{})
	if err != nil {
		t.Fatal(err)
	}
	c := st.(*ceremony)
	u := res.(*api.PasskeyCeremony).URL
	port := m.Port()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}}

	// Only on loopback.
	if ifaces, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifaces {
			ip, _, _ := net.ParseCIDR(a.String())
			if ip == nil || ip.IsLoopback() || ip.To4() == nil {
				continue
			}
			if conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)), time.Second); err == nil {
				conn.Close()
				t.Fatalf("page server answers on %s", ip)
			}
		}
	}

	// Another Host (DNS rebinding, or 127.0.0.1) is refused and does not
	// use the page up.
	req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(port)+"/c/"+c.token, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("GET with Host 127.0.0.1: %s", resp.Status)
	}

	// A wrong token is not found.
	resp, err = client.Get("http://localhost:" + strconv.Itoa(port) + "/c/not-a-token")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Fatalf("unknown token: %s", resp.Status)
	}

	resp, err = client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("first GET: %s", resp.Status)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("CSP %q", csp)
	}
	resp, err = client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Fatalf("second GET: %s", resp.Status)
	}

	post := func(origin, ctype, body string) int {
		req, _ := http.NewRequest("POST", u, strings.NewReader(body))
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		req.Header.Set("Content-Type", ctype)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := post("http://evil.example", "application/json", "{}"); s != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d", s)
	}
	if s := post(c.origin, "text/plain", "{}"); s != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain POST: %d", s)
	}
	if s := post(c.origin, "application/json", `{"x":"`+strings.Repeat("a", MaxBody)+`"}`); s != http.StatusRequestEntityTooLarge {
		t.Fatalf("large POST: %d", s)
	}

	// A syntactically valid but bogus result: taken, then refused.
	done := make(chan error, 1)
	go func() {
		_, err := m.EnrollFinish(ctx, st, json.RawMessage(`{}`))
		done <- err
	}()
	if s := post(c.origin, "application/json", `{"id":"x","type":"public-key"}`); s != http.StatusOK {
		t.Fatalf("POST: %d", s)
	}
	if err := <-done; !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("bogus result: %v", err)
	}
	if s := post(c.origin, "application/json", "{}"); s != http.StatusGone {
		t.Fatalf("POST after the end: %d", s)
	}

	deadline := time.Now().Add(3 * time.Second)
	for m.Port() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if m.Port() != 0 {
		t.Fatal("server still up")
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("port still open")
	}
}

// TestCeremonyExpiry: a ceremony nobody answers ends with a timeout.
func TestCeremonyExpiry(t *testing.T) {
	m := New(method.Deps{}, WithCeremonyTimeout(200*time.Millisecond), WithIdleTimeout(50*time.Millisecond), WithOpener(func(context.Context, string) error { return nil }))
	defer m.Close()
	st, _, err := m.EnrollStart(context.Background(), method.EnrollParams{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.EnrollFinish(context.Background(), st, json.RawMessage(`{}`))
	if !errors.Is(err, api.ErrTimeout) {
		t.Fatalf("expired ceremony: %v", err)
	}
}

// TestWaitCancelled: Wait returns when its context ends.
func TestWaitCancelled(t *testing.T) {
	m := New(method.Deps{}, WithOpener(func(context.Context, string) error { return errors.New("no browser") }))
	defer m.Close()
	st, _, err := m.EnrollStart(context.Background(), method.EnrollParams{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := m.Wait(ctx, st); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait: %v", err)
	}
}

func TestStartWithoutPasskeys(t *testing.T) {
	m := New(method.Deps{})
	defer m.Close()
	if _, _, err := m.Start(context.Background(), nil); !errors.Is(err, api.ErrNotEnrolled) {
		t.Fatalf("no passkeys: %v", err)
	}
	if m.Port() != 0 {
		t.Fatal("server started for nothing")
	}
}

func TestCheckOrigin(t *testing.T) {
	for o, ok := range map[string]bool{
		"http://localhost:1234":     true,
		"https://localhost":         true,
		"http://127.0.0.1:1234":     false,
		"http://evil.localhost.com": false,
		"http://localhost.evil.com": false,
		"chrome-extension://abc":    false,
	} {
		if err := checkOrigin(o, ""); (err == nil) != ok {
			t.Errorf("origin %s: %v", o, err)
		}
	}
	if checkOrigin("http://localhost:1", "http://localhost:2") == nil {
		t.Error("page origin mismatch accepted")
	}
}
