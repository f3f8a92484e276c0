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
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stepup-agent/stepup-agent/api"
)

// DPoP (RFC 9449): a client proves, with each request, that it holds the
// key a token is bound to (the token's cnf.jkt).

// ProofWindow is how far a proof's iat may be from now, either way.
const ProofWindow = 60 * time.Second

// MaxProofSize bounds a DPoP proof.
const MaxProofSize = 4096

// DPoP errors. Every one is an *ProofError wrapping ErrProofInvalid,
// except ErrProofMissing.
var (
	ErrProofMissing = errors.New("the token is bound to a key (cnf.jkt): send a DPoP proof made with that key (RFC 9449) for this request")
	ErrProofInvalid = errors.New("invalid DPoP proof")
)

// ProofError says why a proof was refused.
type ProofError struct{ Reason string }

func (e *ProofError) Error() string        { return "invalid DPoP proof: " + e.Reason }
func (e *ProofError) Is(target error) bool { return target == ErrProofInvalid }

func proofErr(format string, args ...any) error {
	return &ProofError{Reason: fmt.Sprintf(format, args...)}
}

// Proof is a proof to check and what it must match.
type Proof struct {
	JWT   string // the DPoP header's value
	HTM   string // the request's method
	HTU   string // the request's URL (query and fragment are ignored)
	Token string // the access token the proof goes with (ath)
	JKT   string // the token's cnf.jkt
}

// DPoPVerifier checks proofs and remembers their jti.
type DPoPVerifier struct {
	Cache *ReplayCache
}

// NewDPoPVerifier returns a verifier with a replay cache of max entries
// (0: DefaultReplayCacheSize).
func NewDPoPVerifier(max int) *DPoPVerifier {
	return &DPoPVerifier{Cache: NewReplayCache(max)}
}

// proofAlgs are the algorithms a proof may use.
var proofAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256}

type proofClaims struct {
	JTI string       `json:"jti"`
	HTM string       `json:"htm"`
	HTU string       `json:"htu"`
	IAT *json.Number `json:"iat"`
	ATH string       `json:"ath"`
}

// Verify checks p at now: a compact JWS of typ dpop+jwt, alg EdDSA or
// ES256, a public jwk in its header whose RFC 7638 thumbprint is p.JKT,
// signed by it, with htm and htu those of the request, iat within
// ProofWindow of now, ath the base64url SHA-256 of p.Token, and a jti
// this verifier has not seen (it is recorded only when all else holds).
// A nil verifier refuses every proof.
func (v *DPoPVerifier) Verify(p Proof, now time.Time) error {
	if v == nil || v.Cache == nil {
		return proofErr("this verifier checks no proofs")
	}
	if p.JWT == "" {
		return ErrProofMissing
	}
	if len(p.JWT) > MaxProofSize {
		return proofErr("longer than %d bytes", MaxProofSize)
	}
	jws, err := jose.ParseSignedCompact(p.JWT, proofAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return proofErr("not a compact JWS signed with EdDSA or ES256")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "dpop+jwt" {
		return proofErr(`typ is not "dpop+jwt"`)
	}
	jwk := h.JSONWebKey
	if jwk == nil || !jwk.Valid() || !jwk.IsPublic() {
		return proofErr("no public jwk in the header")
	}
	switch k := jwk.Key.(type) {
	case ed25519.PublicKey:
		if h.Algorithm != string(jose.EdDSA) {
			return proofErr("alg %s does not fit an Ed25519 key", h.Algorithm)
		}
	case *ecdsa.PublicKey:
		if h.Algorithm != string(jose.ES256) || k.Curve != elliptic.P256() {
			return proofErr("alg %s does not fit the key (ES256 needs a P-256 key)", h.Algorithm)
		}
	default:
		return proofErr("the jwk is neither an Ed25519 nor a P-256 key")
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return proofErr("the jwk has no thumbprint")
	}
	if base64.RawURLEncoding.EncodeToString(tp) != p.JKT {
		return proofErr("made with another key than the one the token is bound to")
	}
	payload, err := jws.Verify(jwk)
	if err != nil {
		return proofErr("the signature does not verify")
	}
	var c proofClaims
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return proofErr("the claims are not a JSON object")
	}
	if c.JTI == "" || len(c.JTI) > 256 {
		return proofErr("no jti (or one over 256 bytes)")
	}
	if c.HTM == "" || c.HTM != p.HTM {
		return proofErr("made for another HTTP method (htm %q, the request is %q)", c.HTM, p.HTM)
	}
	want, err1 := NormalizeHTU(p.HTU)
	got, err2 := NormalizeHTU(c.HTU)
	if err1 != nil {
		return proofErr("the request's URL (htu) is not an http or https URL")
	}
	if err2 != nil || got != want {
		return proofErr("made for another URL (htu)")
	}
	if c.IAT == nil {
		return proofErr("no iat")
	}
	iatf, err := c.IAT.Float64()
	if err != nil {
		return proofErr("iat is not a number")
	}
	iat := time.Unix(int64(iatf), 0)
	if d := now.Sub(iat); d > ProofWindow || d < -ProofWindow {
		return proofErr("iat is %v away from now; at most %v either way (check the clock)", d.Round(time.Second), ProofWindow)
	}
	sum := sha256.Sum256([]byte(p.Token))
	if c.ATH != base64.RawURLEncoding.EncodeToString(sum[:]) {
		return proofErr("made for another token (ath)")
	}
	key := sha256.Sum256([]byte(p.JKT + "\x00" + c.JTI))
	if !v.Cache.Use(key, iat.Add(ProofWindow), now) {
		return proofErr("replayed: its jti was seen before; make a new proof for each request")
	}
	return nil
}

// NormalizeHTU returns the form of an htu that two proofs of one URL
// share (RFC 9449 section 4.3: no query or fragment; RFC 3986 section 6
// normalization): lowercase scheme and host, no default port, "/" for an
// empty path.
func NormalizeHTU(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Host == "" || u.User != nil {
		return "", errors.New("not an http or https URL")
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}

// DefaultReplayCacheSize is how many jti a ReplayCache holds by default:
// more proofs than that within ProofWindow are refused, not forgotten.
const DefaultReplayCacheSize = 1 << 16

// ReplayCache remembers proof ids until they expire. It is bounded: when
// it is full of unexpired ids it refuses new ones (fail closed) rather
// than forget one that could then be replayed.
type ReplayCache struct {
	mu    sync.Mutex
	max   int
	seen  map[[32]byte]time.Time
	queue []replayEntry // in insertion order; expiries ascend but for clock steps
	head  int
}

type replayEntry struct {
	key [32]byte
	exp time.Time
}

// NewReplayCache returns a cache of at most max ids (0:
// DefaultReplayCacheSize).
func NewReplayCache(max int) *ReplayCache {
	if max <= 0 {
		max = DefaultReplayCacheSize
	}
	return &ReplayCache{max: max, seen: map[[32]byte]time.Time{}}
}

// Use records key until exp and reports whether it was new. Expired ids
// are dropped first.
func (c *ReplayCache) Use(key [32]byte, exp, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.head < len(c.queue) && !c.queue[c.head].exp.After(now) {
		e := c.queue[c.head]
		if c.seen[e.key].Equal(e.exp) {
			delete(c.seen, e.key)
		}
		c.head++
	}
	if c.head > len(c.queue)/2 && c.head > 64 {
		c.queue = append(c.queue[:0], c.queue[c.head:]...)
		c.head = 0
	}
	if old, ok := c.seen[key]; ok && old.After(now) {
		return false
	}
	if len(c.seen) >= c.max {
		return false
	}
	c.seen[key] = exp
	c.queue = append(c.queue, replayEntry{key, exp})
	return true
}

// Len returns how many ids the cache holds.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// DPoPKey is a client's proof-of-possession key: an Ed25519 key made in
// memory, never written anywhere.
type DPoPKey struct {
	signer jose.Signer
	jkt    string
}

// NewDPoPKey makes a fresh key.
func NewDPoPKey() (*DPoPKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	pub := jose.JSONWebKey{Key: priv.Public(), Algorithm: string(jose.EdDSA)}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv},
		(&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
	if err != nil {
		return nil, err
	}
	return &DPoPKey{signer: s, jkt: base64.RawURLEncoding.EncodeToString(tp)}, nil
}

// JKT is the key's RFC 7638 thumbprint: the cnf.jkt of tokens bound to it.
func (k *DPoPKey) JKT() string { return k.jkt }

// Cnf is the cnf request field for this key.
func (k *DPoPKey) Cnf() *api.Cnf { return &api.Cnf{JKT: k.jkt} }

// Proof makes a proof for one request with tok.
func (k *DPoPKey) Proof(htm, htu, tok string, now time.Time) (string, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	u, err := url.Parse(htu)
	if err != nil {
		return "", err
	}
	u.RawQuery, u.Fragment, u.RawFragment = "", "", ""
	sum := sha256.Sum256([]byte(tok))
	payload, err := json.Marshal(map[string]any{
		"jti": base64.RawURLEncoding.EncodeToString(id[:]),
		"htm": htm,
		"htu": u.String(),
		"iat": now.Unix(),
		"ath": base64.RawURLEncoding.EncodeToString(sum[:]),
	})
	if err != nil {
		return "", err
	}
	jws, err := k.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}
