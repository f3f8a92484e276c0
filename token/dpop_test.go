package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stepup-agent/stepup-agent/api"
)

var t0 = time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)

const (
	htm = "POST"
	htu = "https://wallet.example/export"
	tok = "header.payload.signature"
)

func mustKey(t testing.TB) *DPoPKey {
	t.Helper()
	k, err := NewDPoPKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func proof(t testing.TB, k *DPoPKey, method, u, token string, at time.Time) string {
	t.Helper()
	p, err := k.Proof(method, u, token, at)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// signRaw signs arbitrary header options and claims with key, for proofs
// the DPoPKey would never make.
func signRaw(t testing.TB, alg jose.SignatureAlgorithm, key any, opts *jose.SignerOptions, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ath(token string) string {
	s := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(s[:])
}

func claims(at time.Time) map[string]any {
	return map[string]any{"jti": "id-" + at.String(), "htm": htm, "htu": htu, "iat": at.Unix(), "ath": ath(tok)}
}

func TestDPoPAcceptsAValidProofOnce(t *testing.T) {
	k := mustKey(t)
	v := NewDPoPVerifier(0)
	p := proof(t, k, htm, htu+"?x=1#f", tok, t0)
	// The query and fragment are not part of htu; host and scheme case
	// and a default port do not matter.
	if err := v.Verify(Proof{JWT: p, HTM: htm, HTU: "HTTPS://Wallet.Example:443/export?y=2", Token: tok, JKT: k.JKT()}, t0.Add(30*time.Second)); err != nil {
		t.Fatalf("valid proof refused: %v", err)
	}
	err := v.Verify(Proof{JWT: p, HTM: htm, HTU: htu, Token: tok, JKT: k.JKT()}, t0.Add(31*time.Second))
	if !errors.Is(err, ErrProofInvalid) || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("replayed proof: %v; want refused as replayed", err)
	}
	// An ES256 key works too.
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk := jose.JSONWebKey{Key: &ec.PublicKey}
	tp, _ := jwk.Thumbprint(crypto.SHA256)
	ep := signRaw(t, jose.ES256, ec, (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"), claims(t0))
	if err := v.Verify(Proof{JWT: ep, HTM: htm, HTU: htu, Token: tok, JKT: base64.RawURLEncoding.EncodeToString(tp)}, t0); err != nil {
		t.Fatalf("ES256 proof refused: %v", err)
	}
}

func TestDPoPRefuses(t *testing.T) {
	k := mustKey(t)
	other := mustKey(t)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	good := func() Proof {
		return Proof{JWT: proof(t, k, htm, htu, tok, t0), HTM: htm, HTU: htu, Token: tok, JKT: k.JKT()}
	}
	withJWT := func(s string) Proof { p := good(); p.JWT = s; return p }
	edJKT := func() string {
		j := jose.JSONWebKey{Key: edPriv.Public()}
		tp, _ := j.Thumbprint(crypto.SHA256)
		return base64.RawURLEncoding.EncodeToString(tp)
	}()
	for _, tc := range []struct {
		name   string
		p      Proof
		now    time.Time
		reason string
	}{
		{"no proof", Proof{HTM: htm, HTU: htu, Token: tok, JKT: k.JKT()}, t0, "send a DPoP proof"},
		{"another key's proof", Proof{JWT: proof(t, other, htm, htu, tok, t0), HTM: htm, HTU: htu, Token: tok, JKT: k.JKT()}, t0, "another key"},
		{"stale iat", good(), t0.Add(61 * time.Second), "iat"},
		{"iat in the future", good(), t0.Add(-61 * time.Second), "iat"},
		{"another ath", func() Proof { p := good(); p.Token = "other.token.x"; return p }(), t0, "ath"},
		{"wrong htm", func() Proof { p := good(); p.HTM = "GET"; return p }(), t0, "method"},
		{"wrong htu", func() Proof { p := good(); p.HTU = "https://wallet.example/sign"; return p }(), t0, "URL"},
		{"wrong host", func() Proof { p := good(); p.HTU = "https://evil.example/export"; return p }(), t0, "URL"},
		{"not a JWS", withJWT("nope"), t0, "compact JWS"},
		{"typ JWT", withJWT(signRaw(t, jose.EdDSA, edPriv, (&jose.SignerOptions{EmbedJWK: true}).WithType("JWT"), claims(t0))), t0, "typ"},
		{"no jwk", withJWT(signRaw(t, jose.EdDSA, edPriv, (&jose.SignerOptions{}).WithType("dpop+jwt"), claims(t0))), t0, "jwk"},
		{"HS256", withJWT(signRaw(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), (&jose.SignerOptions{}).WithType("dpop+jwt"), claims(t0))), t0, "EdDSA or ES256"},
		{"private key in the header", withJWT(signRaw(t, jose.EdDSA, edPriv, (&jose.SignerOptions{}).WithType("dpop+jwt").WithHeader("jwk", jose.JSONWebKey{Key: edPriv}), claims(t0))), t0, ""}, // go-jose refuses it when parsing, Verify when not
		{"no jti", func() Proof {
			c := claims(t0)
			delete(c, "jti")
			p := withJWT(signRaw(t, jose.EdDSA, edPriv, (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"), c))
			p.JKT = edJKT
			return p
		}(), t0, "jti"},
		{"no iat", func() Proof {
			c := claims(t0)
			delete(c, "iat")
			p := withJWT(signRaw(t, jose.EdDSA, edPriv, (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"), c))
			p.JKT = edJKT
			return p
		}(), t0, "iat"},
		{"tampered payload", func() Proof {
			p := good()
			parts := strings.Split(p.JWT, ".")
			parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"jti":"x","htm":"POST","htu":"` + htu + `","iat":` + "1796187600" + `,"ath":"` + ath(tok) + `"}`))
			p.JWT = strings.Join(parts, ".")
			return p
		}(), t0, "signature"},
	} {
		v := NewDPoPVerifier(0)
		err := v.Verify(tc.p, tc.now)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: %v; want the reason to say %q", tc.name, err, tc.reason)
		}
		if v.Cache.Len() != 0 {
			t.Errorf("%s: a refused proof's jti was recorded", tc.name)
		}
	}
	var nilV *DPoPVerifier
	if nilV.Verify(good(), t0) == nil {
		t.Error("a nil verifier accepts")
	}
}

func TestReplayCacheBoundedAndExpiring(t *testing.T) {
	c := NewReplayCache(2)
	k := func(b byte) [32]byte { return [32]byte{b} }
	if !c.Use(k(1), t0.Add(time.Minute), t0) || !c.Use(k(2), t0.Add(time.Minute), t0) {
		t.Fatal("fresh ids refused")
	}
	if c.Use(k(1), t0.Add(time.Minute), t0) {
		t.Fatal("a seen id is new again")
	}
	if c.Use(k(3), t0.Add(time.Minute), t0) {
		t.Fatal("a full cache took a new id: it must refuse rather than forget")
	}
	// After expiry the ids are forgotten and room is made.
	later := t0.Add(2 * time.Minute)
	if !c.Use(k(3), later.Add(time.Minute), later) || c.Len() != 1 {
		t.Fatalf("expired ids kept: len %d", c.Len())
	}
}

func TestCheckRequest(t *testing.T) {
	k := mustKey(t)
	details, _ := api.ParseDetails(api.RawDetails(`[{"type":"wallet_export","address":"0x12ab"}]`))
	other := api.RawDetails(`[{"type":"wallet_export","address":"0x99"}]`)
	bound := &api.Claims{}
	SetBinding(bound, api.TOTP, details, k.Cnf())
	if bound.ACR != api.ACRMFA || string(bound.AuthorizationDetails) != `[{"type":"wallet_export","address":"0x12ab"}]` || bound.Cnf.JKT != k.JKT() {
		t.Fatalf("SetBinding = %+v", bound.ClaimsExt)
	}
	v := NewDPoPVerifier(0)
	pp := func(d api.RawDetails, dpop string) api.ProofParams {
		return api.ProofParams{AuthorizationDetails: d, DPoP: dpop, HTM: htm, HTU: htu}
	}
	if err := CheckRequest(bound, tok, pp(details.Raw(), proof(t, k, htm, htu, tok, t0)), v, t0); err != nil {
		t.Fatalf("matching request refused: %v", err)
	}
	for name, tc := range map[string]struct {
		p    api.ProofParams
		want error
	}{
		"other details": {pp(other, proof(t, k, htm, htu, tok, t0)), ErrDetailsMismatch},
		"no details":    {pp(nil, proof(t, k, htm, htu, tok, t0)), ErrDetailsMissing},
		"no proof":      {pp(details.Raw(), ""), ErrProofMissing},
	} {
		if err := CheckRequest(bound, tok, tc.p, v, t0); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	plain := &api.Claims{}
	SetBinding(plain, api.Password, nil, nil)
	if plain.ACR != api.ACRReauth || plain.Cnf != nil || plain.AuthorizationDetails != nil {
		t.Fatalf("plain claims = %+v", plain.ClaimsExt)
	}
	if err := CheckRequest(plain, tok, pp(details.Raw(), ""), v, t0); !errors.Is(err, ErrDetailsUnbound) {
		t.Errorf("a token without details passed a request naming details: %v", err)
	}
	if err := CheckRequest(plain, tok, pp(nil, ""), v, t0); err != nil {
		t.Errorf("a plain token with a plain request: %v", err)
	}
}

// FuzzDPoPVerify: no input makes Verify panic or accept a proof of
// another key.
func FuzzDPoPVerify(f *testing.F) {
	k, err := NewDPoPKey()
	if err != nil {
		f.Fatal(err)
	}
	good, _ := k.Proof(htm, htu, tok, t0)
	f.Add(good, htm, htu)
	f.Add(good[:len(good)/2], htm, htu)
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiZHBvcCtqd3QifQ.e30.", htm, htu)
	f.Add(strings.Replace(good, ".", "..", 1), "GET", "http://x/")
	f.Add("", htm, "not a url")
	f.Fuzz(func(t *testing.T, jwt, m, u string) {
		v := NewDPoPVerifier(4)
		err := v.Verify(Proof{JWT: jwt, HTM: m, HTU: u, Token: tok, JKT: k.JKT()}, t0)
		if err == nil && jwt != good {
			// Only a proof signed by k could pass; the fuzzer cannot
			// make one, but it may find the seed with another htu form.
			if _, perr := jose.ParseSignedCompact(jwt, proofAlgs); perr != nil {
				t.Fatalf("accepted an unparsable proof %q", jwt)
			}
		}
	})
}
