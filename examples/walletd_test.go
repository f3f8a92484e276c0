package examples_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/examples/wallet"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stephttp"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
	"github.com/stepup-agent/stepup-agent/token"
)

// TestWalletdOnTCPVerifiesOnline: on loopback TCP every local user can
// reach walletd, so a multi-use token someone saw must stop working the
// moment the user resets it (issue 11 item 6: the offline check took it
// after stepupctl reset).
func TestWalletdOnTCPVerifiesOnline(t *testing.T) {
	a := stepuptest.Start(t, stepuptest.Options{})
	a.EnrollTOTP(t, 2)
	bin := filepath.Join(filepath.Dir(stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletd")), "walletd")
	url := startWalletd(t, bin, a.Env(), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := a.StepUp(ctx, []string{"wallet:sign"})
	if err != nil {
		t.Fatal(err)
	}
	sign := func() int {
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/sign", strings.NewReader(`{"message":"hi"}`))
		req.Header.Set("X-Elevated-Token", res.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := sign(); c != http.StatusOK {
		t.Fatalf("sign with a fresh token: %d", c)
	}
	if _, err := a.Client.ResetState(ctx); err != nil {
		t.Fatal(err)
	}
	if c := sign(); c != http.StatusUnauthorized {
		t.Fatalf("sign with a token revoked by reset: %d, want 401", c)
	}
}

// TestWalletdSocketIsPrivate: walletd's default socket is 0600 in a 0700
// directory.
func TestWalletdSocketIsPrivate(t *testing.T) {
	bin := filepath.Join(filepath.Dir(stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletd")), "walletd")
	run, err := os.MkdirTemp("", "walletd-run")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	url := startWalletd(t, bin, append(os.Environ(), "XDG_RUNTIME_DIR="+run), "unix:"+filepath.Join(run, "w", "walletd.sock"))
	if want := "unix:" + filepath.Join(run, "w", "walletd.sock"); url != want {
		t.Fatalf("walletd listens on %s, want %s", url, want)
	}
	for path, want := range map[string]os.FileMode{filepath.Join(run, "w"): 0o700, filepath.Join(run, "w", "walletd.sock"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
	}
}

// walletdAddresses are walletd's wallets, from GET /balance.
func walletdAddresses(t *testing.T, ctx context.Context, url string) []string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/balance", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b struct {
		Wallets []struct {
			Address string `json:"address"`
		} `json:"wallets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || len(b.Wallets) < 2 {
		t.Fatalf("GET /balance: %v %+v; want two wallets", err, b)
	}
	return []string{b.Wallets[0].Address, b.Wallets[1].Address}
}

// post sends a POST with the headers hdr (name, value, ...) and returns
// the status, the challenge and the body.
func post(t *testing.T, ctx context.Context, url string, hdr ...string) (int, *stephttp.Challenge, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(`{"message":"hi"}`))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, stephttp.ParseChallenge(resp.Header), m
}

// TestWalletdExportIsForItsAddress: walletd's export states the wallet it
// exports as authorization details, so a token the user approved for
// exporting wallet A is refused for wallet B, and is still good for A
// (the refusal did not consume it); a token approved for no wallet is
// refused for both.
func TestWalletdExportIsForItsAddress(t *testing.T) {
	a := stepuptest.Start(t, stepuptest.Options{})
	a.EnrollTOTP(t, 2)
	bin := filepath.Join(filepath.Dir(stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletd")), "walletd")
	url := startWalletd(t, bin, a.Env(), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := walletdAddresses(t, ctx, url)
	A, B := w[0], w[1]

	forA, err := a.StepUpWith(ctx, stepup.StartOptions{Scopes: []string{"wallet:export"}, AuthorizationDetails: wallet.ExportDetails(A)})
	if err != nil {
		t.Fatal(err)
	}
	code, ch, m := post(t, ctx, url+"/export/"+B, stephttp.DefaultHeader, forA.Token)
	if code != http.StatusUnauthorized || ch == nil || ch.Error != stephttp.ErrorInsufficientUserAuthentication || !strings.Contains(ch.Description, "other authorization details") || m["privateKey"] != nil {
		t.Fatalf("export of %s with a token approved for %s: %d %+v %v; want 401 insufficient_user_authentication naming the details", B, A, code, ch, m)
	}
	code, _, m = post(t, ctx, url+"/export/"+A, stephttp.DefaultHeader, forA.Token)
	if code != http.StatusOK || m["address"] != A || m["privateKey"] == nil {
		t.Fatalf("export of %s with a token approved for it: %d %v; want 200 with its key", A, code, m)
	}

	plain, err := a.StepUp(ctx, []string{"wallet:export"})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{A, B} {
		code, ch, _ := post(t, ctx, url+"/export/"+addr, stephttp.DefaultHeader, plain.Token)
		if code != http.StatusUnauthorized || ch == nil || ch.Error != stephttp.ErrorInsufficientUserAuthentication {
			t.Fatalf("export of %s with a token approved for no wallet: %d %+v; want 401 insufficient_user_authentication", addr, code, ch)
		}
	}
}

// TestWalletdWithProofOfPossession: with proofOfPossession: required for
// walletd's scopes, the Go RoundTripper (DPoP on) signs and exports
// through a real agent and walletd, and walletctl -dpop does too; a token
// it attached, copied out and sent without a proof or with another key's
// proof, is refused by walletd.
func TestWalletdWithProofOfPossession(t *testing.T) {
	a := stepuptest.Start(t, stepuptest.Options{Policy: "scopes:\n  \"wallet:sign\":\n    proofOfPossession: required\n  \"wallet:export\":\n    proofOfPossession: required\n"})
	a.EnrollTOTP(t, 4)
	bin := filepath.Dir(stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletd"))
	stepuptest.BuildPackage(t, stepuptest.Module+"/examples/walletctl")
	url := startWalletd(t, filepath.Join(bin, "walletd"), a.Env(), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	A := walletdAddresses(t, ctx, url)[0]

	var stepUps atomic.Int32
	var sent struct {
		sync.Mutex
		tok, proof string
	}
	tr := &stephttp.Transport{
		Client: a.Client,
		Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if tok := r.Header.Get(stephttp.DefaultHeader); tok != "" {
				sent.Lock()
				sent.tok, sent.proof = tok, r.Header.Get("DPoP")
				sent.Unlock()
			}
			return http.DefaultTransport.RoundTrip(r)
		}),
		Scope: func(r *http.Request) string {
			if r.URL.Path == "/sign" {
				return "wallet:sign"
			}
			return ""
		},
		Details: func(r *http.Request) any {
			if addr, ok := strings.CutPrefix(r.URL.Path, "/export/"); ok {
				return wallet.ExportDetails(addr)
			}
			return nil
		},
		DPoP: true,
		StepUpFor: func(ctx context.Context, _ string, o stepup.PromptOptions) (*stepup.TokenResult, error) {
			stepUps.Add(1)
			return a.StepUpWith(ctx, stepup.StartOptions{Scopes: o.Scopes, AuthorizationDetails: o.AuthorizationDetails, Cnf: o.Cnf})
		},
	}
	hc := &http.Client{Transport: tr}
	call := func(path, wantKey string, wantStepUps int32) {
		t.Helper()
		stepUps.Store(0)
		req, _ := http.NewRequestWithContext(ctx, "POST", url+path, strings.NewReader(`{"message":"hi"}`))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		if resp.StatusCode != http.StatusOK || m[wantKey] == nil || stepUps.Load() != wantStepUps {
			t.Fatalf("POST %s: %s %v after %d step-up(s); want 200 with %s after %d", path, resp.Status, m, stepUps.Load(), wantKey, wantStepUps)
		}
		if sent.proof == "" {
			t.Fatalf("POST %s: sent without a DPoP proof", path)
		}
	}
	call("/sign", "signature", 1)
	call("/sign", "signature", 0) // the held key-bound token, with a new proof
	sent.Lock()
	copied, proof := sent.tok, sent.proof
	sent.Unlock()
	call("/export/"+A, "privateKey", 1)

	// The copied multi-use token, without its key.
	code, ch, _ := post(t, ctx, url+"/sign", stephttp.DefaultHeader, copied)
	if code != http.StatusUnauthorized || ch == nil || ch.Error != stephttp.ErrorInvalidDPoPProof {
		t.Fatalf("a copied key-bound token without a proof: %d %+v; want 401 invalid_dpop_proof", code, ch)
	}
	// With the proof it was sent with: replayed.
	code, ch, _ = post(t, ctx, url+"/sign", stephttp.DefaultHeader, copied, "DPoP", proof)
	if code != http.StatusUnauthorized || ch == nil || ch.Error != stephttp.ErrorInvalidDPoPProof {
		t.Fatalf("a copied token with its replayed proof: %d %+v; want 401 invalid_dpop_proof", code, ch)
	}
	// With a fresh proof by another key.
	other, err := token.NewDPoPKey()
	if err != nil {
		t.Fatal(err)
	}
	p, err := other.Proof("POST", url+"/sign", copied, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	code, ch, _ = post(t, ctx, url+"/sign", stephttp.DefaultHeader, copied, "DPoP", p)
	if code != http.StatusUnauthorized || ch == nil || ch.Error != stephttp.ErrorInvalidDPoPProof {
		t.Fatalf("a copied token with another key's proof: %d %+v; want 401 invalid_dpop_proof", code, ch)
	}

	// walletctl: -dpop works; without it the agent will not mint.
	walletctl := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "walletctl"), append([]string{"-url", url}, args...)...)
		cmd.Env, cmd.Stdin = a.Env(), strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	codes := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			c, err := a.Code(ctx)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString(c + "\n")
		}
		return b.String()
	}
	if out, err := walletctl(codes(1), "-dpop", "sign", "hello"); err != nil || !strings.Contains(out, `"signature"`) {
		t.Fatalf("walletctl -dpop sign: %v\n%s", err, out)
	}
	if out, err := walletctl(codes(1), "-dpop", "export", A); err != nil || !strings.Contains(out, `"privateKey"`) {
		t.Fatalf("walletctl -dpop export: %v\n%s", err, out)
	}
	out, err := walletctl("", "sign", "hello")
	if err == nil || strings.Contains(out, `"signature"`) || !strings.Contains(out, "proofOfPossession: required") {
		t.Fatalf("walletctl sign without -dpop under proofOfPossession: required: %v\n%s; want a refusal", err, out)
	}
	t.Logf("walletctl sign without -dpop: %s", out)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
