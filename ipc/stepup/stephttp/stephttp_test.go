package stephttp_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stephttp"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
	"github.com/stepup-agent/stepup-agent/token"
)

const testPolicy = `scopes:
  test:short:
    ttl: 2s
`

func startAgent(t *testing.T) *stepuptest.Agent {
	t.Helper()
	a := stepuptest.Start(t, stepuptest.Options{Policy: testPolicy})
	a.EnrollTOTP(t, 4)
	return a
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// echo answers with the accepted claims.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c, ok := stephttp.ClaimsFromContext(r.Context())
	if !ok {
		http.Error(w, "no claims", 500)
		return
	}
	body, _ := io.ReadAll(r.Body)
	json.NewEncoder(w).Encode(map[string]any{"scope": c.Scope, "jti": c.ID, "body": string(body)})
})

type reply struct {
	status int
	ch     *stephttp.Challenge
	body   map[string]any
}

func send(t *testing.T, hc *http.Client, method, url, header, tok string, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if tok != "" {
		req.Header.Set(header, tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, ch: stephttp.ParseChallenge(resp.Header)}
	json.NewDecoder(resp.Body).Decode(&r.body)
	return r
}

func wantChallenge(t *testing.T, r reply, code, scope, descPart string) {
	t.Helper()
	if r.status != 401 || r.ch == nil {
		t.Fatalf("got %d, challenge %+v; want 401 %s", r.status, r.ch, code)
	}
	if r.ch.Error != code || strings.Join(r.ch.Scopes, " ") != scope || !strings.Contains(r.ch.Description, descPart) {
		t.Fatalf("challenge %+v; want error=%s scope=%s description containing %q", r.ch, code, scope, descPart)
	}
	if r.body["error"] != code {
		t.Fatalf("body %v; want error %s", r.body, code)
	}
}

func wantOK(t *testing.T, r reply, scope string) {
	t.Helper()
	if r.status != 200 || r.body["scope"] != scope {
		t.Fatalf("got %d %v (challenge %+v); want 200 with scope %s", r.status, r.body, r.ch, scope)
	}
}

// forge re-signs claims with a key that is not the agent's, under the
// agent's kid, and also returns the real token with its payload altered.
func forge(t *testing.T, real string) (foreignKey, tampered string) {
	t.Helper()
	priv, _ := token.GenerateKey()
	s, err := token.NewSigner(ed25519.PrivateKey(priv))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(real, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c api.Claims
	json.Unmarshal(raw, &c)
	foreignKey, err = s.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Scope = "wallet:sign wallet:export"
	c.Expiry += 3600
	p2, _ := json.Marshal(c)
	tampered = parts[0] + "." + base64.RawURLEncoding.EncodeToString(p2) + "." + parts[2]
	return foreignKey, tampered
}

func TestMiddlewareRejects(t *testing.T) {
	a := startAgent(t)
	ctx := ctxT(t)
	var clock atomic.Int64 // offset added to the verifiers' clock
	now := func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }

	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := a.Client.JWKS(r.Context())
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write(raw)
	}))
	defer jwks.Close()

	mux := http.NewServeMux()
	mux.Handle("/sign", stephttp.Require("wallet:sign", stephttp.Options{Client: a.Client, Now: now})(echo))
	mux.Handle("/sign-strict", stephttp.Require("wallet:sign", stephttp.Options{Client: a.Client, Now: now, Skew: time.Second})(echo))
	mux.Handle("/sign-remote", stephttp.Require("wallet:sign", stephttp.Options{JWKSURL: jwks.URL, Now: now})(echo))
	mux.Handle("/export-remote", stephttp.Require("wallet:export", stephttp.Options{JWKSURL: jwks.URL, Now: now})(echo))
	mux.Handle("/sign-fresh", stephttp.Require("wallet:sign", stephttp.Options{Client: a.Client, Now: now, MaxAge: time.Minute})(echo))
	mux.Handle("/sign-authz", stephttp.Require("wallet:sign", stephttp.Options{Client: a.Client, Header: "Authorization"})(echo))
	mux.Handle("/export", stephttp.Require("wallet:export", stephttp.Options{Client: a.Client, Online: true})(echo))
	mux.Handle("/export-offline", stephttp.Require("wallet:export", stephttp.Options{Client: a.Client})(echo))
	mux.Handle("/short", stephttp.Require("test:short", stephttp.Options{Client: a.Client, Online: true})(echo))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	hc := srv.Client()
	const H = stephttp.DefaultHeader

	sign, err := a.StepUp(ctx, []string{"wallet:sign"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("missing", func(t *testing.T) {
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/sign", H, "", ""), stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "is required")
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/export", H, "", ""), stephttp.ErrorInsufficientUserAuthentication, "wallet:export", "is required")
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/sign-authz", "Authorization", "Basic Zm9vOmJhcg==", ""), stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "is required")
	})
	t.Run("valid", func(t *testing.T) {
		for _, p := range []string{"/sign", "/sign-strict", "/sign-remote", "/sign-fresh"} {
			wantOK(t, send(t, hc, "POST", srv.URL+p, H, sign.Token, ""), "wallet:sign")
		}
		wantOK(t, send(t, hc, "POST", srv.URL+"/sign-authz", "Authorization", "Bearer "+sign.Token, ""), "wallet:sign")
		// A multi-use token is accepted again.
		wantOK(t, send(t, hc, "POST", srv.URL+"/sign", H, sign.Token, ""), "wallet:sign")
	})
	t.Run("wrong scope", func(t *testing.T) {
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/export", H, sign.Token, ""), stephttp.ErrorInsufficientUserAuthentication, "wallet:export", "not for wallet:export")
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/export-remote", H, sign.Token, ""), stephttp.ErrorInsufficientUserAuthentication, "wallet:export", "not for wallet:export")
	})
	t.Run("forged", func(t *testing.T) {
		foreign, tampered := forge(t, sign.Token)
		for _, p := range []string{"/sign", "/sign-remote"} {
			wantChallenge(t, send(t, hc, "POST", srv.URL+p, H, foreign, ""), stephttp.ErrorInvalidToken, "wallet:sign", "signature")
			wantChallenge(t, send(t, hc, "POST", srv.URL+p, H, tampered, ""), stephttp.ErrorInvalidToken, "wallet:sign", "signature")
			wantChallenge(t, send(t, hc, "POST", srv.URL+p, H, "not.a.token", ""), stephttp.ErrorInvalidToken, "wallet:sign", "well-formed")
		}
		// Online: the agent says so.
		exp, err := a.StepUp(ctx, []string{"wallet:export"})
		if err != nil {
			t.Fatal(err)
		}
		_, tamperedExport := forge(t, exp.Token)
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/export", H, tamperedExport, ""), stephttp.ErrorInvalidToken, "wallet:export", "signature")
		// The forgery did not consume the real one.
		wantOK(t, send(t, hc, "POST", srv.URL+"/export", H, exp.Token, ""), "wallet:export")
	})
	t.Run("expired offline", func(t *testing.T) {
		life := time.Until(sign.ExpiresAt)
		clock.Store(int64(life + 20*time.Second)) // within the default 30s skew
		wantOK(t, send(t, hc, "POST", srv.URL+"/sign", H, sign.Token, ""), "wallet:sign")
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/sign-strict", H, sign.Token, ""), stephttp.ErrorInvalidToken, "wallet:sign", "expired")
		clock.Store(int64(life + 31*time.Second))
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/sign", H, sign.Token, ""), stephttp.ErrorInvalidToken, "wallet:sign", "expired")
		clock.Store(0)
	})
	t.Run("too old for max_age", func(t *testing.T) {
		clock.Store(int64(2 * time.Minute))
		defer clock.Store(0)
		r := send(t, hc, "POST", srv.URL+"/sign-fresh", H, sign.Token, "")
		wantChallenge(t, r, stephttp.ErrorInsufficientUserAuthentication, "wallet:sign", "more than 1m0s ago")
		if !r.ch.HasMaxAge || r.ch.MaxAge != time.Minute {
			t.Fatalf("challenge %+v: want max_age=60", r.ch)
		}
	})
	t.Run("consumed", func(t *testing.T) {
		exp, err := a.StepUp(ctx, []string{"wallet:export"})
		if err != nil {
			t.Fatal(err)
		}
		wantOK(t, send(t, hc, "POST", srv.URL+"/export", H, exp.Token, "x"), "wallet:export")
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/export", H, exp.Token, "x"), stephttp.ErrorInvalidToken, "wallet:export", "already used")
		if !a.Client.IsStepUpRequired(ctx, "wallet:export") {
			t.Fatal("after consumption the agent still holds a wallet:export token")
		}
	})
	t.Run("single-use offline", func(t *testing.T) {
		exp, err := a.StepUp(ctx, []string{"wallet:export"})
		if err != nil {
			t.Fatal(err)
		}
		// No agent to consume it: refused, and not consumed.
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/export-remote", H, exp.Token, ""), stephttp.ErrorInvalidToken, "wallet:export", "verified online")
		// An offline verifier with the agent at hand consumes it online.
		wantOK(t, send(t, hc, "POST", srv.URL+"/export-offline", H, exp.Token, ""), "wallet:export")
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/export-offline", H, exp.Token, ""), stephttp.ErrorInvalidToken, "wallet:export", "already used")
	})
	t.Run("expired online", func(t *testing.T) {
		short, err := a.StepUp(ctx, []string{"test:short"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(short.ExpiresAt) + 1100*time.Millisecond)
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/short", H, short.Token, ""), stephttp.ErrorInvalidToken, "test:short", "expired")
	})
	t.Run("revoked online", func(t *testing.T) {
		exp, err := a.StepUp(ctx, []string{"wallet:export"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Client.ResetState(ctx, "wallet:export"); err != nil {
			t.Fatal(err)
		}
		wantChallenge(t, send(t, hc, "POST", srv.URL+"/export", H, exp.Token, ""), stephttp.ErrorInvalidToken, "wallet:export", "revoked")
	})
}

func TestNewVerifierOptions(t *testing.T) {
	c := &stepup.Client{Socket: "/nonexistent"}
	for _, o := range []stephttp.Options{
		{Client: c, Skew: 6 * time.Minute},
		{Client: c, Skew: -time.Second},
		{Online: true},
		{},
		{JWKSURL: "http://example.com/jwks"},
		{JWKSURL: "ftp://127.0.0.1/jwks"},
	} {
		if _, err := stephttp.NewVerifier(o); err == nil {
			t.Errorf("NewVerifier(%+v) accepted", o)
		}
	}
	for _, o := range []stephttp.Options{
		{Client: c, Skew: 5 * time.Minute},
		{JWKSURL: "http://127.0.0.1:1/jwks"},
		{JWKSURL: "https://example.com/jwks"},
	} {
		if _, err := stephttp.NewVerifier(o); err != nil {
			t.Errorf("NewVerifier(%+v): %v", o, err)
		}
	}
}

func TestMiddlewareAgentDown(t *testing.T) {
	c := &stepup.Client{Socket: t.TempDir() + "/none.sock"}
	srv := httptest.NewServer(stephttp.Require("wallet:export", stephttp.Options{Client: c, Online: true})(echo))
	defer srv.Close()
	r := send(t, srv.Client(), "POST", srv.URL, stephttp.DefaultHeader, "a.b.c", "")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("got %d %v; want 503 when the agent is down", r.status, r.body)
	}
}

// counted wraps the test agent's custom-UI step-up, counting calls.
func counted(a *stepuptest.Agent, n *atomic.Int32) func(context.Context, []string) (*stepup.TokenResult, error) {
	return func(ctx context.Context, scopes []string) (*stepup.TokenResult, error) {
		n.Add(1)
		return a.StepUp(ctx, scopes)
	}
}

func TestTransport(t *testing.T) {
	a := startAgent(t)
	ctx := ctxT(t)
	var hits atomic.Int32
	var lastTok atomic.Value
	record := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			lastTok.Store(r.Header.Get(stephttp.DefaultHeader))
			h.ServeHTTP(w, r)
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/sign", record(stephttp.Require("wallet:sign", stephttp.Options{Client: a.Client})(echo)))
	mux.Handle("/fresh", record(stephttp.Require("wallet:sign", stephttp.Options{Client: a.Client, MaxAge: 2 * time.Second, Skew: time.Second})(echo)))
	mux.Handle("/export", record(stephttp.Require("wallet:export", stephttp.Options{Client: a.Client, Online: true})(echo)))
	mux.Handle("/peek", record(echo0{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var stepUps atomic.Int32
	scopeOf := map[string]string{"/sign": "wallet:sign", "/fresh": "wallet:sign", "/peek": "wallet:export"}
	tr := &stephttp.Transport{
		Client: a.Client,
		Base:   srv.Client().Transport,
		Scope:  func(r *http.Request) string { return scopeOf[r.URL.Path] },
		StepUp: counted(a, &stepUps),
	}
	hc := &http.Client{Transport: tr}
	post := func(path, body string) (*http.Response, map[string]any, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+path, strings.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp, m, nil
	}
	check := func(t *testing.T, path, body string, wantStatus int, wantStepUps, wantHits int32) map[string]any {
		t.Helper()
		hits.Store(0)
		stepUps.Store(0)
		resp, m, err := post(path, body)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		if resp.StatusCode != wantStatus || stepUps.Load() != wantStepUps || hits.Load() != wantHits {
			t.Fatalf("POST %s: %d %v after %d step-up(s) and %d request(s); want %d after %d and %d",
				path, resp.StatusCode, m, stepUps.Load(), hits.Load(), wantStatus, wantStepUps, wantHits)
		}
		return m
	}

	t.Run("first call steps up, the next reuses the token", func(t *testing.T) {
		check(t, "/sign", "", 200, 1, 1)
		check(t, "/sign", "", 200, 0, 1)
	})
	t.Run("challenge answered and retried with the body", func(t *testing.T) {
		// The transport does not know /export needs a scope: the
		// server's RFC 9470 challenge tells it.
		m := check(t, "/export", `{"to":"me"}`, 200, 1, 2)
		if m["body"] != `{"to":"me"}` || m["scope"] != "wallet:export" {
			t.Fatalf("retry lost the body or scope: %v", m)
		}
		// Single-use: the next one steps up again.
		check(t, "/export", `{"to":"me"}`, 200, 1, 2)
	})
	t.Run("single-use token never attached twice", func(t *testing.T) {
		// /peek does not consume the token, so the agent still holds it;
		// the transport must not send it again.
		check(t, "/peek", "", 200, 1, 1)
		first := lastTok.Load().(string)
		check(t, "/peek", "", 200, 1, 1)
		if second := lastTok.Load().(string); second == first || second == "" {
			t.Fatal("the same single-use token was attached twice")
		}
	})
	t.Run("max_age", func(t *testing.T) {
		check(t, "/fresh", "", 200, 0, 1) // the wallet:sign token is recent
		time.Sleep(4 * time.Second)
		// Too old now: the server asks for max_age=2, the held token
		// does not satisfy it, the transport steps up and retries.
		check(t, "/fresh", "", 200, 1, 2)
	})
	t.Run("body that cannot be replayed", func(t *testing.T) {
		hits.Store(0)
		stepUps.Store(0)
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/export", io.NopCloser(bytes.NewReader([]byte("once"))))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || stepUps.Load() != 0 || hits.Load() != 1 {
			t.Fatalf("got %d after %d step-ups, %d requests; want the 401 back, no step-up", resp.StatusCode, stepUps.Load(), hits.Load())
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		var tries atomic.Int32
		cancelled := &stephttp.Transport{
			Client: a.Client, Base: srv.Client().Transport,
			Scope: func(r *http.Request) string { return scopeOf[r.URL.Path] },
			StepUp: func(ctx context.Context, scopes []string) (*stepup.TokenResult, error) {
				tries.Add(1)
				return nil, api.Errorf(api.CodeCancelled, "the user dismissed the prompt")
			},
		}
		chc := &http.Client{Transport: cancelled}
		for _, path := range []string{"/peek", "/export"} { // mapped; by challenge
			hits.Store(0)
			tries.Store(0)
			req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+path, strings.NewReader("x"))
			resp, err := chc.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("%s: got %d, want an error", path, resp.StatusCode)
			}
			var se *stephttp.StepUpError
			if !errors.Is(err, stepup.ErrCancelled) || !errors.As(err, &se) {
				t.Fatalf("%s: %v; want a StepUpError matching stepup.ErrCancelled", path, err)
			}
			wantHits := int32(0)
			if path == "/export" {
				wantHits = 1
				if se.Challenge == nil || se.Challenge.Error != stephttp.ErrorInsufficientUserAuthentication {
					t.Fatalf("StepUpError.Challenge = %+v", se.Challenge)
				}
			}
			if tries.Load() != 1 || hits.Load() != wantHits {
				t.Fatalf("%s: %d step-up(s), %d request(s); want 1 and %d (no retry loop)", path, tries.Load(), hits.Load(), wantHits)
			}
		}
	})
	t.Run("default step-up prompts through the agent", func(t *testing.T) {
		// This agent has no prompter: promptStepUpAuth says so, typed.
		if _, err := a.Client.ResetState(ctx); err != nil {
			t.Fatal(err)
		}
		def := &http.Client{Transport: &stephttp.Transport{Client: a.Client, Base: srv.Client().Transport,
			Scope: func(r *http.Request) string { return scopeOf[r.URL.Path] }}}
		_, err := def.Post(srv.URL+"/sign", "text/plain", strings.NewReader("x"))
		if !errors.Is(err, stepup.ErrNoPrompter) {
			t.Fatalf("got %v; want stepup.ErrNoPrompter", err)
		}
	})
}

// echo0 answers 200 {"scope": ...} from the unverified token: a server
// that never consumes.
type echo0 struct{}

func (echo0) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get(stephttp.DefaultHeader)
	if tok == "" {
		http.Error(w, "no token", 400)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"scope": "?"})
}
