package externaljwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
)

// backend is an independent issuer of assertions: its own keys, signing
// with go-jose the way a backend service would.
type backend struct {
	t    *testing.T
	keys map[string]signingKey // by kid
}

type signingKey struct {
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func newBackend(t *testing.T) *backend { return &backend{t: t, keys: map[string]signingKey{}} }

func (b *backend) add(kid string, alg jose.SignatureAlgorithm) {
	b.t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	b.keys[kid] = signingKey{alg: alg, priv: priv}
}

// jwks is the public JWK Set of the given kids (all when none given).
func (b *backend) jwks(kids ...string) []byte {
	b.t.Helper()
	if len(kids) == 0 {
		for k := range b.keys {
			kids = append(kids, k)
		}
	}
	var set jose.JSONWebKeySet
	for _, kid := range kids {
		k := b.keys[kid]
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
	}
	out, err := json.Marshal(set)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

type assertion struct {
	jwt.Claims
	Scope string `json:"scope,omitempty"`
}

// sign signs claims with kid's key, naming signKid in the header (kid and
// signKid differ to forge a "bad signature").
func (b *backend) signAs(kid, headerKid string, c any) string {
	b.t.Helper()
	k := b.keys[kid]
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if headerKid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), headerKid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
	if err != nil {
		b.t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		b.t.Fatal(err)
	}
	return tok
}

func (b *backend) sign(kid string, c any) string { return b.signAs(kid, kid, c) }

func good(now time.Time, jti string) assertion {
	return assertion{
		Claims: jwt.Claims{
			Subject:  "alice",
			Issuer:   "https://backend.example",
			Audience: jwt.Audience{"stepup-agent"},
			ID:       jti,
			IssuedAt: jwt.NewNumericDate(now),
			Expiry:   jwt.NewNumericDate(now.Add(2 * time.Minute)),
		},
		Scope: "wallet:export wallet:sign",
	}
}

func writeJWKS(t *testing.T, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func refusedWith(t *testing.T, err error, words string) {
	t.Helper()
	var re *RefusedError
	if err == nil || !errors.Is(err, method.ErrVerificationFailed) || !(errors.As(err, &re) || strings.Contains(err.Error(), words)) {
		t.Fatalf("err = %v, want a refusal (%s)", err, words)
	}
	if !strings.Contains(err.Error(), words) {
		t.Fatalf("err = %q, want it to say %q", err, words)
	}
}

func TestFileJWKS(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	be.add("ed", jose.EdDSA)
	be.add("ec", jose.ES256)
	be.add("rsa", jose.RS256)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, be.jwks("ed", "ec", "rsa"), time.Now().Add(-time.Hour))
	cfg := policy.ExternalJwt{JWKS: path, Subject: "alice", Issuer: "https://backend.example", Audience: "stepup-agent"}
	v := New(Config{})
	now := time.Now()
	scopes := []string{"wallet:export"}

	for _, kid := range []string{"ed", "ec", "rsa"} {
		a, err := v.VerifyAssertion(ctx, be.sign(kid, good(now, "jti-"+kid)), scopes, cfg)
		if err != nil {
			t.Fatalf("%s: good assertion refused: %v", kid, err)
		}
		if a.JTI != "jti-"+kid || a.Subject != "alice" || a.KeyID != kid || !a.Expiry.Equal(now.Add(2*time.Minute).Truncate(time.Second)) {
			t.Fatalf("%s: %+v", kid, a)
		}
	}
	// Both requested scopes are covered.
	if _, err := v.VerifyAssertion(ctx, be.sign("ed", good(now, "j2")), []string{"wallet:sign", "wallet:export"}, cfg); err != nil {
		t.Fatal(err)
	}
	// Verify, the agent's interface, returns jti and exp.
	jti, exp, err := v.Verify(ctx, be.sign("ed", good(now, "j3")), scopes, cfg)
	if err != nil || jti != "j3" || exp.IsZero() {
		t.Fatalf("Verify = %q, %v, %v", jti, exp, err)
	}

	cases := []struct {
		name   string
		token  func() string
		scopes []string
		want   string
	}{
		{"expired", func() string {
			c := good(now.Add(-10*time.Minute), "x")
			return be.sign("ed", c)
		}, scopes, "expired"},
		{"expired beyond leeway", func() string {
			c := good(now, "x")
			c.Expiry = jwt.NewNumericDate(now.Add(-31 * time.Second))
			c.IssuedAt = jwt.NewNumericDate(now.Add(-time.Minute))
			return be.sign("ed", c)
		}, scopes, "expired"},
		{"no exp", func() string {
			c := good(now, "x")
			c.Expiry = nil
			return be.sign("ed", c)
		}, scopes, "no exp"},
		{"exp too far ahead", func() string {
			c := good(now, "x")
			c.Expiry = jwt.NewNumericDate(now.Add(2 * time.Hour))
			return be.sign("ed", c)
		}, scopes, "ahead"},
		{"wrong sub", func() string {
			c := good(now, "x")
			c.Subject = "mallory"
			return be.sign("ed", c)
		}, scopes, "sub"},
		{"wrong scope", func() string { return be.sign("ed", good(now, "x")) }, []string{"wallet:delete"}, "scope"},
		{"one scope not covered", func() string { return be.sign("ed", good(now, "x")) }, []string{"wallet:export", "user:delete"}, "user:delete"},
		{"scope prefix is not the scope", func() string {
			c := good(now, "x")
			c.Scope = "wallet:exportx"
			return be.sign("ed", c)
		}, scopes, "scope"},
		{"no scope", func() string {
			c := good(now, "x")
			c.Scope = ""
			return be.sign("ed", c)
		}, scopes, "scope"},
		{"no jti", func() string { return be.sign("ed", good(now, "")) }, scopes, "jti"},
		{"wrong issuer", func() string {
			c := good(now, "x")
			c.Issuer = "https://evil.example"
			return be.sign("ed", c)
		}, scopes, "iss"},
		{"wrong audience", func() string {
			c := good(now, "x")
			c.Audience = jwt.Audience{"someone-else"}
			return be.sign("ed", c)
		}, scopes, "aud"},
		{"not yet valid", func() string {
			c := good(now, "x")
			c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute))
			return be.sign("ed", c)
		}, scopes, "nbf"},
		{"unknown key", func() string {
			be.add("stranger", jose.EdDSA)
			return be.sign("stranger", good(now, "x"))
		}, scopes, "kid"},
		{"bad signature (another key under a known kid)", func() string {
			be.add("forger", jose.EdDSA)
			return be.signAs("forger", "ed", good(now, "x"))
		}, scopes, "signature"},
		{"tampered payload", func() string {
			tok := be.sign("ed", good(now, "x"))
			parts := strings.Split(tok, ".")
			other := strings.Split(be.sign("ed", func() assertion { c := good(now, "x"); c.Subject = "bob"; return c }()), ".")
			return parts[0] + "." + other[1] + "." + parts[2]
		}, scopes, "signature"},
		{"alg none", func() string {
			return "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."
		}, scopes, "algorithm"},
		{"HS256 with the public key as secret", func() string {
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(be.jwks("ed"))}, nil)
			tok, _ := jwt.Signed(s).Claims(good(now, "x")).Serialize()
			return tok
		}, scopes, "algorithm"},
		{"alg does not match the key", func() string {
			// An ES256 signature naming the EdDSA key's kid.
			return be.signAs("ec", "ed", good(now, "x"))
		}, scopes, "kid"},
		{"garbage", func() string { return "not a jwt" }, scopes, "not a signed JWT"},
		{"no scopes requested", func() string { return be.sign("ed", good(now, "x")) }, nil, "no scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token()
			_, err := v.VerifyAssertion(ctx, tok, tc.scopes, cfg)
			refusedWith(t, err, tc.want)
			if len(tok) > 20 && strings.Contains(err.Error(), tok[len(tok)-20:]) {
				t.Fatal("the error quotes the assertion")
			}
		})
	}

	// Without iss/aud in the policy, any are accepted.
	loose := policy.ExternalJwt{JWKS: path, Subject: "alice"}
	c := good(now, "loose")
	c.Issuer, c.Audience = "whoever", nil
	if _, err := v.VerifyAssertion(ctx, be.sign("ed", c), scopes, loose); err != nil {
		t.Fatal(err)
	}

	// A policy without subject is a configuration error, not a pass.
	if _, err := v.VerifyAssertion(ctx, be.sign("ed", good(now, "x")), scopes, policy.ExternalJwt{JWKS: path}); err == nil {
		t.Fatal("no subject configured: accepted")
	}
}

func TestFileRotation(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	be.add("k1", jose.EdDSA)
	be.add("k2", jose.ES256)
	path := filepath.Join(t.TempDir(), "jwks.json")
	t0 := time.Now().Add(-time.Hour)
	writeJWKS(t, path, be.jwks("k1"), t0)
	cfg := policy.ExternalJwt{JWKS: path, Subject: "alice"}
	v := New(Config{})
	now := time.Now()
	if _, _, err := v.Verify(ctx, be.sign("k1", good(now, "a")), []string{"wallet:sign"}, cfg); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Verify(ctx, be.sign("k2", good(now, "b")), []string{"wallet:sign"}, cfg); err == nil {
		t.Fatal("k2 accepted before it was published")
	}
	// The backend rotates: k2 replaces k1 in the file.
	writeJWKS(t, path, be.jwks("k2"), t0.Add(time.Minute))
	if _, _, err := v.Verify(ctx, be.sign("k2", good(now, "c")), []string{"wallet:sign"}, cfg); err != nil {
		t.Fatalf("rotated key refused: %v", err)
	}
	if _, _, err := v.Verify(ctx, be.sign("k1", good(now, "d")), []string{"wallet:sign"}, cfg); err == nil {
		t.Fatal("retired key k1 still accepted")
	}
	// A broken file keeps the last good set.
	writeJWKS(t, path, []byte("{"), t0.Add(2*time.Minute))
	if _, _, err := v.Verify(ctx, be.sign("k2", good(now, "e")), []string{"wallet:sign"}, cfg); err != nil {
		t.Fatalf("after a broken write: %v", err)
	}
	// A missing file is an error, not a pass.
	v2 := New(Config{})
	if _, _, err := v2.Verify(ctx, be.sign("k2", good(now, "f")), []string{"wallet:sign"}, policy.ExternalJwt{JWKS: path + ".missing", Subject: "alice"}); err == nil {
		t.Fatal("missing JWKS file: accepted")
	}
}

// jwksServer is a backend's JWKS endpoint on loopback.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		b := s.body
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(b []byte) { s.mu.Lock(); s.body = b; s.mu.Unlock() }

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestURLRotation(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	be.add("old", jose.RS256)
	be.add("new", jose.EdDSA)
	srv := newJWKSServer(t, be.jwks("old"))
	clk := &fakeClock{t: time.Now()}
	v := New(Config{Deps: method.Deps{Now: clk.now}, TTL: time.Hour, MinRefetch: 10 * time.Second})
	cfg := policy.ExternalJwt{JWKS: srv.URL + "/.well-known/jwks.json", Subject: "alice"}
	scopes := []string{"wallet:export"}

	if _, _, err := v.Verify(ctx, be.sign("old", good(clk.now(), "1")), scopes, cfg); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Verify(ctx, be.sign("old", good(clk.now(), "2")), scopes, cfg); err != nil {
		t.Fatal(err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1 (cached)", n)
	}
	// Rotation: the endpoint now publishes "new"; an assertion naming it
	// makes the verifier fetch again at once. (Past MinRefetch since the
	// first fetch.)
	srv.set(be.jwks("new"))
	clk.add(11 * time.Second)
	if _, _, err := v.Verify(ctx, be.sign("new", good(clk.now(), "3")), scopes, cfg); err != nil {
		t.Fatalf("rotated key refused: %v", err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// Unknown kids do not hammer the endpoint: one fetch per MinRefetch.
	be.add("bogus", jose.EdDSA)
	for i := range 5 {
		_, _, err := v.Verify(ctx, be.sign("bogus", good(clk.now(), "b")), scopes, cfg)
		refusedWith(t, err, "kid")
		if i == 0 {
			clk.add(11 * time.Second)
		}
	}
	if n := srv.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches after bogus kids, want 3", n)
	}
	// TTL: the set is fetched again once it is old.
	clk.add(time.Hour)
	if _, _, err := v.Verify(ctx, be.sign("new", good(clk.now(), "4")), scopes, cfg); err != nil {
		t.Fatal(err)
	}
	if n := srv.fetches.Load(); n != 4 {
		t.Fatalf("%d fetches after TTL, want 4", n)
	}
	// The endpoint failing keeps the cached set in use.
	srv.set([]byte("oops"))
	clk.add(time.Hour)
	if _, _, err := v.Verify(ctx, be.sign("new", good(clk.now(), "5")), scopes, cfg); err != nil {
		t.Fatalf("stale set not used when the endpoint fails: %v", err)
	}
}

func TestURLRules(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	be.add("k", jose.EdDSA)
	v := New(Config{HTTPTimeout: 2 * time.Second})
	for _, u := range []string{"http://example.com/jwks.json", "http://10.1.2.3/jwks.json"} {
		_, _, err := v.Verify(ctx, be.sign("k", good(time.Now(), "x")), []string{"a"}, policy.ExternalJwt{JWKS: u, Subject: "alice"})
		if err == nil || !strings.Contains(err.Error(), "https") {
			t.Fatalf("%s: err = %v, want a refusal of plain http", u, err)
		}
	}
	// An endpoint that fails is an error, never a pass.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) }))
	defer srv.Close()
	if _, _, err := v.Verify(ctx, be.sign("k", good(time.Now(), "x")), []string{"a"}, policy.ExternalJwt{JWKS: srv.URL, Subject: "alice"}); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("HTTP 500: %v", err)
	}
}

func TestReplayCache(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	c := NewReplayCache(clk.now)
	exp := clk.now().Add(time.Minute)
	if !c.Use("a", exp) {
		t.Fatal("first use refused")
	}
	if c.Use("a", exp) {
		t.Fatal("replay accepted")
	}
	if !c.Seen("a") || c.Seen("b") {
		t.Fatal("Seen")
	}
	// Persist and restore: the replay is still refused.
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2 := NewReplayCache(clk.now)
	if err := json.Unmarshal(b, c2); err != nil {
		t.Fatal(err)
	}
	if c2.Use("a", exp) {
		t.Fatal("replay accepted after restore")
	}
	// Still refused within the leeway after exp, forgotten after it.
	clk.add(time.Minute + MaxLeeway/2)
	if c2.Use("a", exp) {
		t.Fatal("replay accepted within the leeway")
	}
	clk.add(MaxLeeway)
	if c2.Len() != 1 || !c2.Use("a", clk.now().Add(time.Minute)) {
		t.Fatal("an expired jti was not forgotten")
	}
	c2.Import(map[string]time.Time{"old": clk.now().Add(-time.Second)})
	if c2.Seen("old") {
		t.Fatal("expired entry imported")
	}
	if len(c2.Export()) != 1 {
		t.Fatalf("Export = %v", c2.Export())
	}
	// Concurrent uses of one jti: exactly one wins.
	c3 := NewReplayCache(nil)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c3.Use("same", time.Now().Add(time.Minute)) {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners", wins.Load())
	}
}

// The agent forgets a jti at the time Verify returns; the assertion must
// not be accepted from then on, or it could be replayed in the leeway
// after exp.
func TestVerifyKeepsJTIThroughTheLeeway(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	be.add("ed", jose.EdDSA)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, be.jwks("ed"), time.Now().Add(-time.Hour))
	cfg := policy.ExternalJwt{JWKS: path, Subject: "alice"}
	issued := time.Now().Truncate(time.Second)
	clock := issued
	v := New(Config{Deps: method.Deps{Now: func() time.Time { return clock }}})
	tok := be.sign("ed", good(issued, "leeway"))
	_, keep, err := v.Verify(ctx, tok, []string{"wallet:sign"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	clock = keep
	if _, _, err := v.Verify(ctx, tok, []string{"wallet:sign"}, cfg); err == nil {
		t.Fatalf("the assertion is still accepted at %v, when its jti may be forgotten (exp %v)", keep, issued.Add(2*time.Minute))
	}
}
