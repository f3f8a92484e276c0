// Package externaljwt verifies the assertions of requestExternalAuthElevatedToken
// (the server-authorized path, method external_jwt): a JWT that a backend
// signs to say "this user may have these scopes now", checked against the
// backend's JWK Set named by the policy (externalJwt.jwks), without any
// user interaction.
//
// An assertion is accepted when:
//   - its signature verifies with a key of the JWK Set: EdDSA (Ed25519),
//     ES256 or RS256 (RSA keys of 2048 bits or more), chosen by the header's
//     kid (a set of one key needs no kid);
//   - sub equals externalJwt.subject;
//   - scope (space-delimited) holds every requested scope;
//   - exp is in the future (30 s leeway for clock skew) and no more than
//     MaxLifetime ahead; nbf and iat, when present, are not in the future;
//   - jti is present;
//   - iss and aud match externalJwt.issuer and externalJwt.audience when
//     the policy sets them.
//
// Each jti is accepted once: the agent keeps the jtis it has seen until
// they expire (ReplayCache is a ready-made, persistable store for that).
//
// The JWK Set is a file or an https URL (http only to a loopback address,
// for tests). A file is re-read when its modification time or size
// changes; a URL is cached for Config.TTL and fetched again at once when
// an assertion names a kid the cached set lacks (key rotation), at most
// once per Config.MinRefetch (10 s by default).
package externaljwt

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
	"go.uber.org/zap"
)

// Algorithms are the signature algorithms accepted.
var Algorithms = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.RS256}

// Defaults of Config.
const (
	DefaultTTL         = 5 * time.Minute
	DefaultMinRefetch  = 10 * time.Second
	DefaultLeeway      = 30 * time.Second
	MaxLeeway          = 30 * time.Second
	DefaultMaxLifetime = time.Hour
	DefaultHTTPTimeout = 10 * time.Second
	maxJWKSBytes       = 1 << 20
	maxAssertionBytes  = 16 << 10
	maxJTILen          = 256
)

// Config configures the external_jwt method's Verifier. The zero value
// is usable.
type Config struct {
	// Deps: the agent's clock (exp, nbf, iat and the JWK Set cache) and
	// logger.
	method.Deps
	// HTTPTimeout bounds one fetch of a JWK Set URL (default 10 s).
	HTTPTimeout time.Duration
	// TTL is how long a fetched JWK Set is used before it is fetched again.
	TTL time.Duration
	// MinRefetch is the least time between two fetches of one URL caused
	// by unknown kids, so a stream of bogus kids cannot hammer the backend.
	MinRefetch time.Duration
	// Leeway for exp, nbf and iat (default and most 30 s).
	Leeway time.Duration
	// MaxLifetime refuses assertions whose exp is further ahead: the agent
	// keeps every jti until its exp.
	MaxLifetime time.Duration
}

// Assertion is what a verified assertion says.
type Assertion struct {
	Subject string
	Issuer  string
	JTI     string
	Expiry  time.Time
	Scopes  []string
	KeyID   string
	Alg     string
}

// RefusedError is a verification failure: the assertion is not good. Its
// text says why, and never holds the assertion or a claim's value.
// errors.Is(err, method.ErrVerificationFailed) holds for it. Other errors
// (the JWK Set cannot be read) are the agent's or the backend's fault.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// Is makes errors.Is(err, method.ErrVerificationFailed) hold.
func (e *RefusedError) Is(target error) bool { return target == method.ErrVerificationFailed }

func refused(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// Verifier checks assertions. It is safe for concurrent use.
type Verifier struct {
	opt  Config
	log  *zap.Logger
	keys *keyCache
}

// New returns the external_jwt method's Verifier.
func New(o Config) *Verifier {
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = DefaultHTTPTimeout
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.MinRefetch <= 0 {
		o.MinRefetch = DefaultMinRefetch
	}
	if o.Leeway <= 0 {
		o.Leeway = DefaultLeeway
	}
	if o.Leeway > MaxLeeway {
		o.Leeway = MaxLeeway
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = DefaultMaxLifetime
	}
	o.Now = o.Clock()
	log := o.Log("external_jwt")
	return &Verifier{opt: o, log: log, keys: newKeyCache(o, log)}
}

// Verify checks an assertion and returns its jti and the time until which
// the jti must be remembered; it is what the agent's ExternalVerifier
// interface asks for. The agent refuses a jti it has seen, and forgets it
// at that time. An assertion is accepted up to Leeway after its exp, so
// the time returned is exp plus the leeway (and a second, since go-jose
// still accepts at exactly exp+leeway), not exp: a jti forgotten at exp
// could be replayed during the leeway.
func (v *Verifier) Verify(ctx context.Context, assertion string, requestedScopes []string, cfg policy.ExternalJwt) (string, time.Time, error) {
	a, err := v.VerifyAssertion(ctx, assertion, requestedScopes, cfg)
	if err != nil {
		return "", time.Time{}, err
	}
	return a.JTI, a.Expiry.Add(v.opt.Leeway + time.Second), nil
}

type claims struct {
	jwt.Claims
	Scope *string `json:"scope"`
}

// VerifyAssertion checks an assertion against cfg and returns its claims.
func (v *Verifier) VerifyAssertion(ctx context.Context, assertion string, requestedScopes []string, cfg policy.ExternalJwt) (Assertion, error) {
	var none Assertion
	if cfg.JWKS == "" || cfg.Subject == "" {
		return none, errors.New("externalJwt.jwks and externalJwt.subject must be set in the policy")
	}
	if len(requestedScopes) == 0 {
		return none, refused("no scope was requested")
	}
	if len(assertion) > maxAssertionBytes {
		return none, refused("the assertion is too long")
	}
	tok, err := jwt.ParseSigned(strings.TrimSpace(assertion), Algorithms)
	if err != nil {
		return none, refused("the assertion is not a signed JWT with an accepted algorithm (EdDSA, ES256, RS256)")
	}
	if len(tok.Headers) != 1 {
		return none, refused("the assertion must carry exactly one signature")
	}
	hdr := tok.Headers[0]
	alg := jose.SignatureAlgorithm(hdr.Algorithm)

	key, err := v.keys.find(ctx, cfg.JWKS, hdr.KeyID, alg)
	if err != nil {
		return none, err
	}
	var c claims
	if err := tok.Claims(key.Key, &c); err != nil {
		return none, refused("the assertion's signature does not verify with key %q", short(key.KeyID))
	}

	now := v.opt.Now()
	if c.Expiry == nil {
		return none, refused("the assertion has no exp")
	}
	exp := c.Expiry.Time()
	exp1 := Expected(cfg, now)
	if err := c.Claims.ValidateWithLeeway(exp1, v.opt.Leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return none, refused("the assertion has expired")
		case errors.Is(err, jwt.ErrNotValidYet):
			return none, refused("the assertion is not valid yet (nbf)")
		case errors.Is(err, jwt.ErrIssuedInTheFuture):
			return none, refused("the assertion was issued in the future (iat)")
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return none, refused("the assertion's iss is not externalJwt.issuer")
		case errors.Is(err, jwt.ErrInvalidAudience):
			return none, refused("the assertion's aud does not name externalJwt.audience")
		default:
			return none, refused("the assertion's claims are not valid")
		}
	}
	if exp.Sub(now) > v.opt.MaxLifetime {
		return none, refused("the assertion's exp is more than %s ahead", v.opt.MaxLifetime)
	}
	if c.Subject != cfg.Subject {
		return none, refused("the assertion's sub is not the policy's externalJwt.subject")
	}
	if c.ID == "" {
		return none, refused("the assertion has no jti")
	}
	if len(c.ID) > maxJTILen {
		return none, refused("the assertion's jti is too long")
	}
	if c.Scope == nil {
		return none, refused("the assertion has no scope")
	}
	granted := strings.Fields(*c.Scope)
	for _, s := range requestedScopes {
		if !contains(granted, s) {
			return none, refused("the assertion's scope does not cover %q", s)
		}
	}
	return Assertion{
		Subject: c.Subject,
		Issuer:  c.Issuer,
		JTI:     c.ID,
		Expiry:  exp,
		Scopes:  granted,
		KeyID:   key.KeyID,
		Alg:     string(alg),
	}, nil
}

// Expected returns the claims cfg asks for at time now.
func Expected(cfg policy.ExternalJwt, now time.Time) jwt.Expected {
	e := jwt.Expected{Issuer: cfg.Issuer, Time: now}
	if cfg.Audience != "" {
		e.AnyAudience = jwt.Audience{cfg.Audience}
	}
	return e
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// usable reports whether k may check a signature made with alg.
func usable(k jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Use != "" && k.Use != "sig" {
		return false
	}
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	pub := k.Public()
	if !pub.Valid() {
		return false
	}
	switch alg {
	case jose.RS256:
		rk, ok := pub.Key.(*rsa.PublicKey)
		return ok && rk.N.BitLen() >= 2048
	case jose.ES256, jose.EdDSA:
		return true // go-jose checks the key type and curve when verifying
	}
	return false
}
