package externaljwt

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
)

// FuzzParseSet: any JWKS document a backend serves parses or is refused,
// never panics; picking a key from a parsed set never panics either.
func FuzzParseSet(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k", Algorithm: "EdDSA", Use: "sig"}}})
	f.Add(good)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"r","alg":"RS256"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AAAA"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		set, err := parseSet(b)
		if err != nil {
			return
		}
		for _, alg := range []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.RS256, jose.HS256} {
			pick(set, "", alg)  //nolint:errcheck
			pick(set, "k", alg) //nolint:errcheck
		}
	})
}

// FuzzVerifyAssertion: an assertion from a caller is accepted only if it
// carries a valid signature of the configured key (checked again here
// with go-jose directly); anything else is refused without panic.
func FuzzVerifyAssertion(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	dir := f.TempDir()
	path := filepath.Join(dir, "jwks.json")
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k", Algorithm: "EdDSA", Use: "sig"}}})
	if err := os.WriteFile(path, set, 0o600); err != nil {
		f.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k"))
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	claims := map[string]any{"sub": "alice", "iss": "https://backend.example", "aud": "stepup-agent", "jti": "j1",
		"iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(), "scope": "wallet:export"}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add(tok[:len(tok)-2] + "AA")
	f.Add("e30.e30.")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.")
	f.Add("a.b.c.d.e")
	cfg := policy.ExternalJwt{JWKS: path, Subject: "alice", Issuer: "https://backend.example", Audience: "stepup-agent"}
	v := New(Config{Deps: method.Deps{Now: func() time.Time { return now }}})
	f.Fuzz(func(t *testing.T, assertion string) {
		_, err := v.VerifyAssertion(context.Background(), assertion, []string{"wallet:export"}, cfg)
		if err != nil {
			return
		}
		parsed, perr := jwt.ParseSigned(assertion, []jose.SignatureAlgorithm{jose.EdDSA})
		var out map[string]any
		if perr != nil || parsed.Claims(pub, &out) != nil {
			t.Fatalf("accepted an assertion that does not verify with the configured key: %q", assertion)
		}
	})
}
