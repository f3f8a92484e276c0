// Package token mints and verifies elevated access tokens: JWTs (RFC 7519)
// signed with EdDSA (Ed25519), their claims as in docs/protocol.md
// ("Elevated access tokens"), the signing key's public half served as a
// JWK Set (RFC 7517) under a kid that is its RFC 7638 thumbprint.
//
// go-jose/v4 does the JOSE work: it is maintained, supports EdDSA and JWK
// thumbprints, and refuses algorithm confusion when told which algorithms
// to accept.
package token

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stepup-agent/stepup-agent/api"
)

// Errors of Verify. Their messages never contain the token.
var (
	ErrMalformed = errors.New("token is not a well-formed JWT")
	ErrSignature = errors.New("token signature does not verify against the agent's keys")
	ErrExpired   = errors.New("token has expired")
)

// Signer holds the agent's signing key.
type Signer struct {
	priv   ed25519.PrivateKey
	kid    string
	signer jose.Signer
	jwks   jose.JSONWebKeySet
}

// GenerateKey returns a fresh Ed25519 signing key.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	return priv, err
}

// NewSigner returns a Signer for priv.
func NewSigner(priv ed25519.PrivateKey) (*Signer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	pub := priv.Public().(ed25519.PublicKey)
	jwk := jose.JSONWebKey{Key: pub, Algorithm: string(jose.EdDSA), Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", jwk.KeyID))
	if err != nil {
		return nil, err
	}
	return &Signer{priv: priv, kid: jwk.KeyID, signer: sig, jwks: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}}}, nil
}

// KID is the key ID in every token's header and in JWKS.
func (s *Signer) KID() string { return s.kid }

// JWKS returns the public keys as a JWK Set.
func (s *Signer) JWKS() jose.JSONWebKeySet { return s.jwks }

// Mint signs c. The claims are encoded once, by encoding/json, and
// signed as they are: authorization_details stay verbatim (jwt.Signed
// would decode and re-encode them, sorting their keys).
func (s *Signer) Mint(c api.Claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Verify checks tok's signature against the agent's key and returns its
// claims. It checks expiry against now; scope, revocation and use are the
// caller's.
func (s *Signer) Verify(tok string, now time.Time) (*api.Claims, error) {
	return VerifyWithKeys(tok, &s.jwks, now, 0)
}

// VerifyWithKeys checks tok against a JWK Set (the agent's `jwks`, for
// relying parties that verify offline) and returns its claims. skew is the
// clock skew allowed on exp and iat.
func VerifyWithKeys(tok string, keys *jose.JSONWebKeySet, now time.Time, skew time.Duration) (*api.Claims, error) {
	if len(tok) > 8192 {
		return nil, ErrMalformed
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil || len(parsed.Headers) != 1 {
		return nil, ErrMalformed
	}
	matches := keys.Key(parsed.Headers[0].KeyID)
	if len(matches) == 0 {
		return nil, ErrSignature
	}
	var c api.Claims
	if err := parsed.Claims(matches[0].Key, &c); err != nil {
		return nil, ErrSignature
	}
	if err := checkClaims(&c, now, skew); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkClaims checks what a token's claims must hold once its signature
// is known good: an id, a lifetime that has not ended at now, no issue
// time in the future, and binding claims of known kinds.
func checkClaims(c *api.Claims, now time.Time, skew time.Duration) error {
	if c.ID == "" || c.Expiry == 0 {
		return ErrMalformed
	}
	if !now.Before(time.Unix(c.Expiry, 0).Add(skew)) {
		return ErrExpired
	}
	if time.Unix(c.IssuedAt, 0).After(now.Add(skew + time.Second)) {
		return ErrMalformed
	}
	if err := checkBindingClaims(c); err != nil {
		return ErrMalformed
	}
	return nil
}

// HeldClaims returns the claims of tok, a token the caller minted with
// this package and holds byte for byte (the agent's verifyToken for a
// held token): the signature is not checked again, since the string is
// the one the agent signed, and the claims are decoded from the payload
// the agent wrote, then checked as Verify checks them (expiry against
// now). Verifying an Ed25519 signature and parsing the JWS with go-jose
// was ~70 us and 127 allocations per verifyToken; this is a base64 and a
// JSON decode. A string that is not a held token must go to Verify.
func HeldClaims(tok string, now time.Time) (*api.Claims, error) {
	var payload string
	if i := strings.IndexByte(tok, '.'); i >= 0 {
		if j := strings.IndexByte(tok[i+1:], '.'); j >= 0 {
			payload = tok[i+1 : i+1+j]
		}
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if payload == "" || err != nil {
		return nil, ErrMalformed
	}
	var c api.Claims
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, ErrMalformed
	}
	if err := checkClaims(&c, now, 0); err != nil {
		return nil, err
	}
	return &c, nil
}
