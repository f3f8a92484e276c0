package stephttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stephttp"
	"github.com/stepup-agent/stepup-agent/token"
)

// localIssuer mints tokens as the agent would, with binding claims, and
// serves its JWK Set: the middleware verifies them offline.
type localIssuer struct {
	s    *token.Signer
	jwks *httptest.Server
	n    atomic.Int64
}

func newIssuer(t *testing.T) *localIssuer {
	priv, _ := token.GenerateKey()
	s, err := token.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	li := &localIssuer{s: s}
	li.jwks = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(s.JWKS())
	}))
	t.Cleanup(li.jwks.Close)
	return li
}

func (li *localIssuer) mint(t *testing.T, scope, method string, details string, cnf *api.Cnf, authAgo time.Duration) string {
	t.Helper()
	now := time.Now()
	c := api.Claims{Issuer: "stepup-agent", Subject: "u", Scope: scope, ID: fmt.Sprint("j", li.n.Add(1)),
		IssuedAt: now.Unix(), Expiry: now.Add(5 * time.Minute).Unix(), AuthTime: now.Add(-authAgo).Unix(), AMR: []string{"otp"}}
	d, err := api.ParseDetails(api.RawDetails(details))
	if err != nil {
		t.Fatal(err)
	}
	token.SetBinding(&c, method, d, cnf)
	tok, err := li.s.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

const exportA = `[{"type":"wallet_export","address":"0x12ab"}]`

func exportDetails(r *http.Request) (any, error) {
	return []map[string]any{{"type": "wallet_export", "address": r.URL.Query().Get("address")}}, nil
}

func do(t *testing.T, srv *httptest.Server, method, path string, hdr map[string]string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, ch: stephttp.ParseChallenge(resp.Header)}
	json.NewDecoder(resp.Body).Decode(&r.body)
	return r
}

func TestMiddlewareDetails(t *testing.T) {
	li := newIssuer(t)
	v, err := stephttp.NewVerifier(stephttp.Options{JWKSURL: li.jwks.URL})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/export", v.RequireDetails("wallet:sign", exportDetails)(echo))
	mux.Handle("/plain", v.Require("wallet:sign")(echo))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	withA := li.mint(t, "wallet:sign", api.TOTP, exportA, nil, 0)
	plain := li.mint(t, "wallet:sign", api.TOTP, "", nil, 0)
	h := func(tok string) map[string]string { return map[string]string{stephttp.DefaultHeader: tok} }

	wantOK(t, do(t, srv, "POST", "/export?address=0x12ab", h(withA)), "wallet:sign")
	wantChallenge(t, do(t, srv, "POST", "/export?address=0x99", h(withA)), stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "other authorization details")
	wantChallenge(t, do(t, srv, "POST", "/export?address=0x12ab", h(plain)), stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "without authorization details")
	wantChallenge(t, do(t, srv, "POST", "/plain", h(withA)), stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "specific authorization details")
	wantOK(t, do(t, srv, "POST", "/plain", h(plain)), "wallet:sign")
}

func TestMiddlewareDPoP(t *testing.T) {
	li := newIssuer(t)
	var clock atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }
	v, err := stephttp.NewVerifier(stephttp.Options{JWKSURL: li.jwks.URL, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	strict, err := stephttp.NewVerifier(stephttp.Options{JWKSURL: li.jwks.URL, RequireProof: true})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/sign", v.Require("wallet:sign")(echo))
	mux.Handle("/strict", strict.Require("wallet:sign")(echo))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	k, _ := token.NewDPoPKey()
	other, _ := token.NewDPoPKey()
	bound := li.mint(t, "wallet:sign", api.TOTP, "", k.Cnf(), 0)
	bound2 := li.mint(t, "wallet:sign", api.TOTP, "", k.Cnf(), 0)
	proof := func(key *token.DPoPKey, method, path, tok string, at time.Time) string {
		p, err := key.Proof(method, srv.URL+path, tok, at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	hdr := func(tok, p string) map[string]string {
		m := map[string]string{"Authorization": "DPoP " + tok, stephttp.DefaultHeader: tok}
		if p != "" {
			m["DPoP"] = p
		}
		return m
	}
	wantProofRefused := func(r reply, part string) {
		t.Helper()
		if r.status != 401 || r.ch == nil || !r.ch.DPoP() || r.ch.Error != stephttp.ErrorInvalidDPoPProof || !strings.Contains(r.ch.Description, part) {
			t.Fatalf("got %d %+v; want 401 DPoP invalid_dpop_proof saying %q", r.status, r.ch, part)
		}
	}
	good := proof(k, "POST", "/sign", bound, time.Now())
	wantOK(t, do(t, srv, "POST", "/sign", hdr(bound, good)), "wallet:sign")
	wantProofRefused(do(t, srv, "POST", "/sign", hdr(bound, good)), "replayed")
	wantProofRefused(do(t, srv, "POST", "/sign", hdr(bound, "")), "DPoP proof")
	wantProofRefused(do(t, srv, "POST", "/sign", hdr(bound, proof(other, "POST", "/sign", bound, time.Now()))), "another key")
	wantProofRefused(do(t, srv, "POST", "/sign", hdr(bound, proof(k, "POST", "/sign", bound2, time.Now()))), "another token")
	wantProofRefused(do(t, srv, "POST", "/sign", hdr(bound, proof(k, "GET", "/sign", bound, time.Now()))), "method")
	wantProofRefused(do(t, srv, "POST", "/sign", hdr(bound, proof(k, "POST", "/other", bound, time.Now()))), "URL")
	stale := proof(k, "POST", "/sign", bound, time.Now())
	clock.Store(int64(2 * time.Minute))
	wantProofRefused(do(t, srv, "POST", "/sign", hdr(bound, stale)), "iat")
	clock.Store(0)

	// A service that wants key-bound tokens says so with a DPoP challenge.
	plain := li.mint(t, "wallet:sign", api.TOTP, "", nil, 0)
	r := do(t, srv, "POST", "/strict", hdr(plain, ""))
	if r.status != 401 || !r.ch.DPoP() || !r.ch.StepUpRequested() || strings.Join(r.ch.Algs, " ") != "EdDSA ES256" {
		t.Fatalf("RequireProof with a plain token: %d %+v; want a DPoP step-up challenge with algs", r.status, r.ch)
	}
	wantOK(t, do(t, srv, "POST", "/strict", hdr(bound, proof(k, "POST", "/strict", bound, time.Now()))), "wallet:sign")
}

func TestMiddlewareMaxAgeAndACR(t *testing.T) {
	li := newIssuer(t)
	v, err := stephttp.NewVerifier(stephttp.Options{JWKSURL: li.jwks.URL, MaxAge: time.Minute, Skew: time.Second, ACRValues: []string{api.ACRMFA}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(v.Require("wallet:sign")(echo))
	defer srv.Close()
	h := func(tok string) map[string]string { return map[string]string{stephttp.DefaultHeader: tok} }
	r := do(t, srv, "GET", "/", h(li.mint(t, "wallet:sign", api.TOTP, "", nil, 5*time.Minute)))
	wantChallenge(t, r, stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "more than 1m0s ago")
	if !r.ch.HasMaxAge || r.ch.MaxAge != time.Minute || strings.Join(r.ch.ACRValues, " ") != "mfa" {
		t.Fatalf("challenge %+v; want max_age=60 and acr_values=mfa", r.ch)
	}
	wantChallenge(t, do(t, srv, "GET", "/", h(li.mint(t, "wallet:sign", api.Password, "", nil, 0))), stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "reauth")
	wantOK(t, do(t, srv, "GET", "/", h(li.mint(t, "wallet:sign", api.TOTP, "", nil, 0))), "wallet:sign")
	if _, err := stephttp.NewVerifier(stephttp.Options{JWKSURL: li.jwks.URL, ACRValues: []string{"gold"}}); err == nil {
		t.Error("an unknown acr value is accepted")
	}
}

// noTokens is an agent that holds no token: every call answers 4007.
func noTokens(t *testing.T) (*stepup.Client, <-chan map[string]json.RawMessage) {
	path, seen := testenv.RecordingAgent(t, `"error":{"code":4007,"message":"no token","data":{"reason":"token_invalid"}}`)
	return &stepup.Client{Socket: path}, seen
}

// The RoundTripper binds its tokens to the process key, proves it with
// each request, passes the request's details, and answers a challenge's
// acr_values and max_age.
func TestTransportDPoPAndDetails(t *testing.T) {
	li := newIssuer(t)
	v, err := stephttp.NewVerifier(stephttp.Options{JWKSURL: li.jwks.URL, RequireProof: true, MaxAge: time.Minute, ACRValues: []string{api.ACRMFA}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(v.RequireDetails("wallet:sign", exportDetails)(echo))
	defer srv.Close()
	client, seen := noTokens(t)
	var prompts []string
	tr := &stephttp.Transport{
		Client:  client,
		Details: func(r *http.Request) any { d, _ := exportDetails(r); return d },
		StepUpFor: func(ctx context.Context, method string, o stepup.PromptOptions) (*stepup.TokenResult, error) {
			prompts = append(prompts, method)
			d, _ := stepup.Details(o.AuthorizationDetails)
			return &stepup.TokenResult{Token: li.mint(t, strings.Join(o.Scopes, " "), api.TOTP, string(d), o.Cnf, 0)}, nil
		},
	}
	hc := &http.Client{Transport: tr}
	// No scope mapping: the server's DPoP challenge asks for the step-up,
	// with acr_values=mfa; the retry carries a key-bound token and a proof.
	resp, err := hc.Get(srv.URL + "/?address=0x12ab")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d; want 200 after a DPoP step-up", resp.StatusCode)
	}
	if len(prompts) != 1 || prompts[0] != api.MethodPromptMfa {
		t.Errorf("prompts = %v; want one promptMfa (acr_values=mfa)", prompts)
	}
	p := <-seen
	key, _ := stephttp.ProcessKey()
	if !strings.Contains(string(p["cnf"]), key.JKT()) || !strings.Contains(string(p["authorizationDetails"]), "0x12ab") {
		t.Errorf("getToken params = %s; want the process key and the details", p)
	}
}

func TestChallengeDPoPRoundTrip(t *testing.T) {
	c := stephttp.Challenge{Scheme: "DPoP", Error: stephttp.ErrorInvalidDPoPProof, Description: "x", Algs: []string{"EdDSA", "ES256"}}
	h := http.Header{}
	h.Add("WWW-Authenticate", c.String())
	got := stephttp.ParseChallenge(h)
	if !got.DPoP() || got.Error != c.Error || strings.Join(got.Algs, " ") != "EdDSA ES256" {
		t.Fatalf("round trip of %q = %+v", c.String(), got)
	}
}
