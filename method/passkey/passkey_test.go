package passkey

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	st, ch, err := m.Start(ctx, method.StartRequest{Creds: creds})
	if err != nil {
		t.Fatal(err)
	}
	c := ch.(*api.PasskeyCeremony)
	if c.URL != st.(*ceremony).url || c.PublicKey == nil {
		t.Fatalf("challenge %v", c)
	}
	a := m.Ask(st)
	if a.Field != "" || !strings.Contains(a.Hint, "file://"+st.(*ceremony).launcher) || strings.Contains(a.Hint, st.(*ceremony).token) {
		t.Fatalf("ask %+v", a)
	}
	resp, err := m.Wait(method.WithPromptEnv(ctx, api.PromptEnv{}), st)
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
	m := New(Config{Deps: method.Deps{Logger: log}, Opener: b.opener(t), IdleTimeout: 200 * time.Millisecond})
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
		st, ch, err := m.Start(ctx, method.StartRequest{Creds: creds})
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
		st, ch, err := m.Start(ctx, method.StartRequest{Creds: creds})
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
		st2, _, err := m.Start(ctx, method.StartRequest{Creds: creds})
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
	m := New(Config{Deps: method.Deps{Logger: zap.NewNop()}, IdleTimeout: 100 * time.Millisecond, Opener: func(context.Context, string) error { return nil }})
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
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Timeout: 5 * time.Second, Transport: transport, Jar: jar}
	// other is another client of the same user that did not load the page.
	other := &http.Client{Timeout: 5 * time.Second, Transport: transport}

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
	bound := false
	for _, h := range resp.Header.Values("Set-Cookie") {
		if strings.Contains(h, "stepup_page=") {
			bound = true
			if !strings.Contains(h, "HttpOnly") || !strings.Contains(h, "SameSite=Strict") || !strings.Contains(h, "Path=/c/") {
				t.Fatalf("binding cookie %q", h)
			}
		}
	}
	if !bound {
		t.Fatal("the first GET set no binding cookie")
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

	postWith := func(cl *http.Client, origin, ctype, body string) int {
		req, _ := http.NewRequest("POST", u, strings.NewReader(body))
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		req.Header.Set("Content-Type", ctype)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	post := func(origin, ctype, body string) int { return postWith(client, origin, ctype, body) }
	// Without the cookie of the first load: refused, and the ceremony
	// goes on (nothing was posted, nothing counted).
	for i := 0; i < 6; i++ {
		if s := postWith(other, c.origin, "application/json", `{"id":"x","type":"public-key"}`); s != http.StatusForbidden {
			t.Fatalf("POST from a client that did not load the page: %d", s)
		}
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
	m := New(Config{CeremonyTimeout: 200 * time.Millisecond, IdleTimeout: 50 * time.Millisecond, Opener: func(context.Context, string) error { return nil }})
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
	m := New(Config{Opener: func(context.Context, string) error { return errors.New("no browser") }})
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
	m := New(Config{})
	defer m.Close()
	if _, _, err := m.Start(context.Background(), method.StartRequest{}); !errors.Is(err, api.ErrNotEnrolled) {
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

// TestWaitOpensOnlyForThePrompt: on the custom-UI path (no prompt
// environment in the context) Wait never opens a browser; for the
// agent's prompt it opens the launcher once.
func TestWaitOpensOnlyForThePrompt(t *testing.T) {
	runtimeDir(t)
	var mu sync.Mutex
	var opened []string
	m := New(Config{Opener: func(_ context.Context, p string) error {
		mu.Lock()
		defer mu.Unlock()
		opened = append(opened, p)
		return nil
	}})
	defer m.Close()
	st, _, err := m.EnrollStart(context.Background(), method.EnrollParams{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, _ = m.Wait(ctx, st)
		cancel()
	}
	mu.Lock()
	n := len(opened)
	mu.Unlock()
	if n != 0 {
		t.Fatalf("Wait on the custom-UI path opened %v", opened)
	}
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(method.WithPromptEnv(context.Background(), api.PromptEnv{}), 50*time.Millisecond)
		_, _ = m.Wait(ctx, st)
		cancel()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(opened) != 1 || opened[0] != st.(*ceremony).launcher {
		t.Fatalf("Wait for the prompt opened %v, want the launcher once", opened)
	}
}

// TestLauncherIsPrivate: the file the browser is opened on is the
// user's alone, holds the page's address, and goes once the page is
// loaded; the address is nowhere else on disk.
func TestLauncherIsPrivate(t *testing.T) {
	rt := runtimeDir(t)
	m := New(Config{Opener: func(context.Context, string) error { return nil }})
	defer m.Close()
	st, res, err := m.EnrollStart(context.Background(), method.EnrollParams{})
	if err != nil {
		t.Fatal(err)
	}
	c := st.(*ceremony)
	p, err := c.launcherPath()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(filepath.Dir(p)) != rt {
		t.Fatalf("launcher %s not under $XDG_RUNTIME_DIR %s", p, rt)
	}
	// With the agent's runtime directory there (the systemd unit's
	// RuntimeDirectory, the only one it may write to), the launcher goes
	// in it.
	if err := os.Mkdir(filepath.Join(rt, "stepup"), 0o700); err != nil {
		t.Fatal(err)
	}
	var l launchDir
	lp, err := l.write("http://localhost:1/c/x")
	if err != nil {
		t.Fatal(err)
	}
	l.close()
	if filepath.Dir(filepath.Dir(lp)) != filepath.Join(rt, "stepup") {
		t.Fatalf("launcher %s not in the agent's runtime directory", lp)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("launcher mode: %v %v", fi.Mode(), err)
	}
	di, err := os.Stat(filepath.Dir(p))
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("launcher directory mode: %v %v", di.Mode(), err)
	}
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), res.(*api.PasskeyCeremony).URL) || strings.Contains(p, c.token) {
		t.Fatalf("launcher %s:\n%s", p, b)
	}
	resp, err := http.Get(res.(*api.PasskeyCeremony).URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %s", resp.Status)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("launcher still there after the page was loaded: %v", err)
	}
	_ = m.Close()
	if _, err := os.Stat(filepath.Dir(p)); !os.IsNotExist(err) {
		t.Fatalf("launcher directory still there after Close: %v", err)
	}
}

// TestPeerUID: the page server finds the owner of a loopback client.
func TestPeerUID(t *testing.T) {
	if !peerCheckAvailable {
		t.Skip("no peer lookup on this platform")
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		defer l.Close()
		go func() {
			c, err := net.Dial(network, l.Addr().String())
			if err == nil {
				time.Sleep(time.Second)
				c.Close()
			}
		}()
		conn, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		uid, err := peerUID(conn.LocalAddr(), conn.RemoteAddr())
		conn.Close()
		if err != nil || uid != os.Geteuid() {
			t.Fatalf("%s: peer uid %d, %v; want %d", network, uid, err, os.Geteuid())
		}
	}
}

// runtimeDir sets $XDG_RUNTIME_DIR to a private directory, as the
// session's (0700) is, and returns it.
func runtimeDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", d)
	return d
}
