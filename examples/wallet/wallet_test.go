package wallet_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/examples/wallet"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stephttp"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// service runs the wallet service in front of a real agent, counting
// the requests that reach it.
func service(t *testing.T) (a *stepuptest.Agent, url string, hits *atomic.Int32, clock *atomic.Int64) {
	t.Helper()
	a = stepuptest.Start(t, stepuptest.Options{})
	a.EnrollTOTP(t, 4)
	hits, clock = new(atomic.Int32), new(atomic.Int64)
	h := wallet.NewServer(wallet.Config{Client: a.Client, Now: func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return a, srv.URL, hits, clock
}

// wallets are the service's wallet addresses, from GET /balance.
func wallets(t *testing.T, url string) []string {
	t.Helper()
	_, m, err := do(t, http.DefaultClient, "GET", url+"/balance", "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, w := range m["wallets"].([]any) {
		out = append(out, w.(map[string]any)["address"].(string))
	}
	if len(out) != wallet.Wallets || out[0] != m["address"] {
		t.Fatalf("GET /balance: %v; want %d wallets, the first also as address", m, wallet.Wallets)
	}
	return out
}

func do(t *testing.T, hc *http.Client, method, url, body string, hdr ...string) (*http.Response, map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp, m, nil
}

// TestRoundTripperAgainstWallet drives the wallet service with the Go
// RoundTripper through a real agent.
func TestRoundTripperAgainstWallet(t *testing.T) {
	a, url, hits, _ := service(t)
	addr := wallets(t, url)[0]
	var stepUps atomic.Int32
	stepUp := func(ctx context.Context, _ string, o stepup.PromptOptions) (*stepup.TokenResult, error) {
		stepUps.Add(1)
		return a.StepUpWith(ctx, stepup.StartOptions{Scopes: o.Scopes, AuthorizationDetails: o.AuthorizationDetails, Cnf: o.Cnf})
	}
	hc := &http.Client{Transport: &stephttp.Transport{
		Client: a.Client,
		Scope: func(r *http.Request) string {
			if r.URL.Path == "/sign" {
				return "wallet:sign"
			}
			return ""
		},
		Details: func(r *http.Request) any {
			if a, ok := strings.CutPrefix(r.URL.Path, "/export/"); ok {
				return wallet.ExportDetails(a)
			}
			return nil
		},
		StepUpFor: stepUp,
	}}
	call := func(t *testing.T, method, path, body string, wantStepUps, wantHits int32, wantKey string) {
		t.Helper()
		hits.Store(0)
		stepUps.Store(0)
		resp, m, err := do(t, hc, method, url+path, body)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if resp.StatusCode != 200 || m[wantKey] == nil || stepUps.Load() != wantStepUps || hits.Load() != wantHits {
			t.Fatalf("%s %s: %d %v after %d step-up(s), %d request(s); want 200 with %s after %d and %d",
				method, path, resp.StatusCode, m, stepUps.Load(), hits.Load(), wantKey, wantStepUps, wantHits)
		}
	}

	t.Run("no step-up needed", func(t *testing.T) { call(t, "GET", "/balance", "", 0, 1, "balance") })
	t.Run("first call steps up", func(t *testing.T) { call(t, "POST", "/sign", `{"message":"hello"}`, 1, 1, "signature") })
	t.Run("multi-use token reused", func(t *testing.T) { call(t, "POST", "/sign", `{"message":"again"}`, 0, 1, "signature") })
	t.Run("challenge answered and retried", func(t *testing.T) { call(t, "POST", "/export/"+addr, `{}`, 1, 2, "privateKey") })
	t.Run("single-use: the second export steps up again", func(t *testing.T) { call(t, "POST", "/export/"+addr, `{}`, 1, 2, "privateKey") })
	t.Run("cancelled", func(t *testing.T) {
		var tries atomic.Int32
		chc := &http.Client{Transport: &stephttp.Transport{Client: a.Client,
			StepUp: func(ctx context.Context, scopes []string) (*stepup.TokenResult, error) {
				tries.Add(1)
				return nil, api.Errorf(api.CodeCancelled, "the user dismissed the prompt")
			}}}
		hits.Store(0)
		_, _, err := do(t, chc, "POST", url+"/export/"+addr, `{}`)
		if !errors.Is(err, stepup.ErrCancelled) {
			t.Fatalf("got %v; want stepup.ErrCancelled", err)
		}
		if tries.Load() != 1 || hits.Load() != 1 {
			t.Fatalf("%d step-up(s), %d request(s); want 1 and 1: no retry loop", tries.Load(), hits.Load())
		}
	})
}

// TestWalletRejects checks the middleware's answers at the wallet service.
func TestWalletRejects(t *testing.T) {
	a, url, _, clock := service(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hc := http.DefaultClient
	const H = stephttp.DefaultHeader
	want := func(t *testing.T, path, tok, code, scope, desc string) {
		t.Helper()
		var hdr []string
		if tok != "" {
			hdr = []string{H, tok}
		}
		resp, m, err := do(t, hc, "POST", url+path, `{"message":"m"}`, hdr...)
		if err != nil {
			t.Fatal(err)
		}
		ch := stephttp.ParseChallenge(resp.Header)
		if resp.StatusCode != 401 || ch == nil || ch.Error != code || strings.Join(ch.Scopes, " ") != scope || !strings.Contains(ch.Description, desc) || m["error"] != code {
			t.Fatalf("POST %s: %d %v, challenge %+v; want 401 %s scope=%s (%q)", path, resp.StatusCode, m, ch, code, scope, desc)
		}
	}
	sign, err := a.StepUp(ctx, []string{"wallet:sign"})
	if err != nil {
		t.Fatal(err)
	}
	addr := wallets(t, url)
	t.Run("missing", func(t *testing.T) {
		want(t, "/sign", "", stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "required")
		want(t, "/export/"+addr[0], "", stephttp.ErrorInsufficientUserAuthentication, "wallet:export", "required")
	})
	t.Run("wrong scope", func(t *testing.T) {
		want(t, "/export/"+addr[0], sign.Token, stephttp.ErrorInsufficientUserAuthentication, "wallet:export", "not for wallet:export")
	})
	t.Run("no address, or one the service does not hold", func(t *testing.T) {
		for _, path := range []string{"/export", "/export/0x00"} {
			resp, _, err := do(t, hc, "POST", url+path, "", H, sign.Token)
			if err != nil || resp.StatusCode != http.StatusNotFound {
				t.Fatalf("POST %s: %v %v; want 404", path, resp.Status, err)
			}
		}
	})
	t.Run("approved for no wallet", func(t *testing.T) {
		exp, err := a.StepUp(ctx, []string{"wallet:export"})
		if err != nil {
			t.Fatal(err)
		}
		want(t, "/export/"+addr[0], exp.Token, stephttp.ErrorInsufficientUserAuthentication, "wallet:export", "authorization details")
	})
	t.Run("expired", func(t *testing.T) {
		clock.Store(int64(11 * time.Minute))
		defer clock.Store(0)
		want(t, "/sign", sign.Token, stephttp.ErrorInvalidToken, "wallet:sign", "expired")
	})
	t.Run("forged", func(t *testing.T) {
		parts := strings.Split(sign.Token, ".")
		raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var c map[string]any
		json.Unmarshal(raw, &c)
		c["exp"] = time.Now().Add(24 * time.Hour).Unix()
		p, _ := json.Marshal(c)
		want(t, "/sign", parts[0]+"."+base64.RawURLEncoding.EncodeToString(p)+"."+parts[2], stephttp.ErrorInvalidToken, "wallet:sign", "signature")
	})
	t.Run("consumed", func(t *testing.T) {
		exp, err := a.StepUpWith(ctx, stepup.StartOptions{Scopes: []string{"wallet:export"}, AuthorizationDetails: wallet.ExportDetails(addr[0])})
		if err != nil {
			t.Fatal(err)
		}
		resp, m, err := do(t, hc, "POST", url+"/export/"+addr[0], "", H, exp.Token)
		if err != nil || resp.StatusCode != 200 || m["privateKey"] == nil {
			t.Fatalf("first export: %v %v", err, m)
		}
		want(t, "/export/"+addr[0], exp.Token, stephttp.ErrorInvalidToken, "wallet:export", "already used")
	})
}
