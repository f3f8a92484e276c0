package passkey

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/chromedp/cdproto/cdp"
	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// requireAll reports whether a missing prerequisite must fail the test
// (CI) rather than skip it.
func requireAll() bool {
	return testenv.Strict()
}

// requireChromium returns the path of Debian's chromium.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if requireAll() {
		t.Fatal("chromium is not installed (scripts/apt-packages.txt lists it)")
	}
	t.Skip("chromium is not installed")
	return ""
}

// browser is a headless Chromium tab with a CDP virtual authenticator:
// CTAP2, internal transport, resident keys, user verification that
// succeeds, and presence simulated.
type browser struct {
	ctx    context.Context
	authID cdpwebauthn.AuthenticatorID
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := requireChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // tests run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(func(string, ...any) {}))
	t.Cleanup(cancel)
	b := &browser{ctx: ctx}
	err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, cdpwebauthn.Enable, cdpwebauthn.EnableParams{}); err != nil {
			return err
		}
		r, err := cdp.Call(ctx, tg, cdpwebauthn.AddVirtualAuthenticator, cdpwebauthn.AddVirtualAuthenticatorParams{
			Options: &cdpwebauthn.VirtualAuthenticatorOptions{
				Protocol:                    cdpwebauthn.AuthenticatorProtocolCtap2,
				Transport:                   cdpwebauthn.AuthenticatorTransportInternal,
				HasResidentKey:              true,
				HasUserVerification:         true,
				IsUserVerified:              true,
				AutomaticPresenceSimulation: true,
			},
		})
		if err != nil {
			return err
		}
		b.authID = r.AuthenticatorID
		return nil
	}))
	if err != nil {
		if requireAll() {
			t.Fatalf("starting chromium: %v", err)
		}
		t.Skipf("cannot start chromium here: %v", err)
	}
	return b
}

// call runs one CDP command in the tab.
func call[P, R any](t *testing.T, b *browser, c cdp.Command[P, R], p P) R {
	t.Helper()
	var out R
	err := chromedp.Do(b.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		var err error
		out, err = cdp.Call(ctx, tg, c, p)
		return err
	}))
	if err != nil {
		t.Fatalf("cdp: %v", err)
	}
	return out
}

// navigate loads url in the tab.
func (b *browser) navigate(ctx context.Context, url string) error {
	tctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Do(tctx, chromedp.Navigate(url))
}

// opener is the Opener the tests hand to New: it loads the launcher
// file in the headless tab, as xdg-open would in the user's browser, and
// the launcher sends the tab on to the page.
func (b *browser) opener(t *testing.T) Opener {
	return func(ctx context.Context, path string) error {
		if err := b.navigate(ctx, "file://"+path); err != nil {
			t.Errorf("navigate: %v", err)
			return err
		}
		return nil
	}
}

// pageResult waits for the agent's page to show the verdict it got back
// from its POST (document.body.dataset.result).
func (b *browser) pageResult(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.dataset.result || ""`))
		if err == nil && v != "" {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the page showed no result")
	return ""
}

// customUI is a third-party page on another localhost port, standing for
// a client's own UI that runs the ceremony with the publicKey options and
// sends {credential}.
type customUI struct {
	url string
}

func newCustomUI(t *testing.T) *customUI {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<!doctype html><title>custom UI</title>"))
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return &customUI{url: "http://localhost:" + port + "/"}
}

// get runs navigator.credentials.get with options in the custom UI and
// returns the credential's JSON.
func (c *customUI) get(t *testing.T, b *browser, options json.RawMessage) json.RawMessage {
	t.Helper()
	if err := b.navigate(b.ctx, c.url); err != nil {
		t.Fatal(err)
	}
	js := `(async () => {
		const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(` + string(options) + `);
		const c = await navigator.credentials.get({publicKey});
		return JSON.stringify(c.toJSON());
	})()`
	tctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(tctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("credentials.get in the custom UI: %v", err)
	}
	return json.RawMessage(s)
}

// tamperSignature flips a bit of the assertion's signature.
func tamperSignature(t *testing.T, cred json.RawMessage) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cred, &m); err != nil {
		t.Fatal(err)
	}
	resp := m["response"].(map[string]any)
	sig, err := base64.RawURLEncoding.DecodeString(resp["signature"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sig[len(sig)-1] ^= 0x01
	resp["signature"] = base64.RawURLEncoding.EncodeToString(sig)
	out, _ := json.Marshal(m)
	return out
}

func credResp(c json.RawMessage) json.RawMessage {
	b, _ := json.Marshal(map[string]json.RawMessage{"credential": c})
	return b
}

// addCredential is WebAuthn.addCredential with only the members a CTAP2
// authenticator takes: cdproto's Credential always sends the CMTG
// members, which Chromium refuses for an authenticator without them.
var addCredential = cdp.Command[addCredentialParams, cdp.Empty]{Method: cdpwebauthn.CommandAddCredential}

type addCredentialParams struct {
	AuthenticatorID cdpwebauthn.AuthenticatorID `json:"authenticatorId"`
	Credential      virtualCredential           `json:"credential"`
}

type virtualCredential struct {
	CredentialID         []byte  `json:"credentialId"`
	IsResidentCredential bool    `json:"isResidentCredential"`
	RpID                 string  `json:"rpId,omitempty"`
	PrivateKey           []byte  `json:"privateKey"`
	UserHandle           []byte  `json:"userHandle,omitempty"`
	SignCount            float64 `json:"signCount"`
}
