package stephttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/token"
	"go.uber.org/zap"
)

// Clock skew bounds of Options.Skew.
const (
	DefaultSkew = 30 * time.Second
	MaxSkew     = 5 * time.Minute
)

// Options configure the relying-party side (Require, NewVerifier).
type Options struct {
	// Header carries the token; empty means DefaultHeader.
	// "Authorization" reads "Bearer TOKEN".
	Header string
	// Client is the agent. Online verification uses its verifyToken; offline
	// verification fetches its jwks unless JWKSURL is set.
	Client *stepup.Client
	// JWKSURL is where a remote service fetches the agent's JWK Set
	// (https, or http on a loopback address), for offline verification.
	JWKSURL string
	// HTTPClient fetches JWKSURL; nil means a client with a 10s timeout.
	HTTPClient *http.Client
	// Online verifies every token with the agent's verifyToken, consuming
	// single-use tokens (consume: true), so each is accepted once. Offline
	// verification (the default) checks the signature against the JWK Set
	// and cannot tell whether a token was used or revoked: a single-use
	// token reaching an offline verifier is consumed online through Client
	// when there is one, and refused otherwise.
	Online bool
	// MaxAge, when positive, requires the user's verification (auth_time)
	// to be at most this old; the challenge carries it as max_age.
	MaxAge time.Duration
	// Skew is the clock skew allowed on exp, iat and auth_time; zero means
	// DefaultSkew, and it may not exceed MaxSkew.
	Skew time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger logs refusals (never a token); nil means none.
	Logger *zap.Logger
	// ACRValues, when set, are the authentication context classes
	// (mfa, reauth, external) a token's acr must be one of; the
	// challenge carries them as acr_values (RFC 9470).
	ACRValues []string
	// RequireProof refuses tokens not bound to a key (no cnf.jkt): every
	// request then proves possession with a DPoP proof. Key-bound tokens
	// always need their proof, whatever this says.
	RequireProof bool
	// HTU returns the URL a request was made to, as the client saw it,
	// for the DPoP proof's htu; nil means the scheme from r.TLS, r.Host
	// and r.URL.Path. Set it behind a proxy that rewrites them.
	HTU func(*http.Request) string
	// ReplayCacheSize bounds the DPoP proof ids remembered (0:
	// token.DefaultReplayCacheSize); more proofs than that within a
	// minute are refused.
	ReplayCacheSize int
}

// DetailsFunc returns the authorization details a handler is about to
// act on (RFC 9396), for Verifier.RequireDetails: a JSON array value
// (api.RawDetails, a string of JSON, or anything that marshals to one),
// or nil for none. An error refuses the request with 400.
type DetailsFunc func(*http.Request) (any, error)

// Verifier checks elevated tokens for a service.
type Verifier struct {
	o    Options
	keys *keyCache
	log  *zap.Logger
	dpop *token.DPoPVerifier
}

// NewVerifier checks o and returns a Verifier.
func NewVerifier(o Options) (*Verifier, error) {
	switch {
	case o.Skew < 0:
		return nil, errors.New("stephttp: negative clock skew")
	case o.Skew == 0:
		o.Skew = DefaultSkew
	case o.Skew > MaxSkew:
		return nil, fmt.Errorf("stephttp: clock skew %v exceeds the maximum of %v", o.Skew, MaxSkew)
	}
	if o.MaxAge < 0 {
		return nil, errors.New("stephttp: negative MaxAge")
	}
	if o.Header == "" {
		o.Header = DefaultHeader
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	for _, a := range o.ACRValues {
		if a != api.ACRMFA && a != api.ACRReauth && a != api.ACRExternal {
			return nil, fmt.Errorf("stephttp: ACRValues: %q is not mfa, reauth or external", a)
		}
	}
	v := &Verifier{o: o, log: o.Logger, dpop: token.NewDPoPVerifier(o.ReplayCacheSize)}
	if v.log == nil {
		v.log = zap.NewNop()
	}
	switch {
	case o.Online && o.Client == nil:
		return nil, errors.New("stephttp: online verification needs Options.Client")
	case o.Online:
	case o.JWKSURL != "":
		f, err := urlFetcher(o.JWKSURL, o.HTTPClient)
		if err != nil {
			return nil, err
		}
		v.keys = newKeyCache(f)
	case o.Client != nil:
		c := o.Client
		v.keys = newKeyCache(func(ctx context.Context) ([]byte, error) { return c.JWKS(ctx) })
	default:
		return nil, errors.New("stephttp: set Options.Client (the local agent) or Options.JWKSURL")
	}
	return v, nil
}

// Require returns middleware that lets a request through only with a
// valid elevated token for scope. It panics when o is invalid (a
// configuration error at start-up, like regexp.MustCompile); use
// NewVerifier to get the error instead.
//
//	mux.Handle("POST /export", stephttp.Require("wallet:export", stephttp.Options{Client: c, Online: true})(exportHandler))
func Require(scope string, o Options) func(http.Handler) http.Handler {
	v, err := NewVerifier(o)
	if err != nil {
		panic(err)
	}
	return v.Require(scope)
}

// RequireDetails is Require for a handler that states the authorization
// details it is about to act on (see Verifier.RequireDetails); it panics
// when o is invalid.
//
//	mux.Handle("POST /export/{address}", stephttp.RequireDetails("wallet:export", stephttp.Options{Client: c, Online: true},
//		func(r *http.Request) (any, error) {
//			return []map[string]any{{"type": "wallet_export", "address": r.PathValue("address")}}, nil
//		})(exportHandler))
func RequireDetails(scope string, o Options, details DetailsFunc) func(http.Handler) http.Handler {
	v, err := NewVerifier(o)
	if err != nil {
		panic(err)
	}
	return v.RequireDetails(scope, details)
}

// Require returns middleware that lets a request through only with a
// valid elevated token for scope; the handler finds the token's claims
// with ClaimsFromContext. A missing token, or one for other scopes or too
// old for MaxAge, gets 401 with an RFC 9470 challenge
// (error="insufficient_user_authentication"); a malformed, forged,
// expired, revoked or consumed one gets 401 error="invalid_token"; an
// agent that cannot be asked gets 503.
func (v *Verifier) Require(scope string) func(http.Handler) http.Handler {
	return v.RequireDetails(scope, nil)
}

// RequireDetails is Require for a handler that states the details it is
// about to act on: details reads them from the request (a path value,
// the query, or the body, which it must then restore for the handler),
// and a token approved for other details, or for none, is refused with
// the step-up challenge, as is a token with details when details
// returns nil.
//
//	mux.Handle("POST /export/{address}", v.RequireDetails("wallet:export", func(r *http.Request) (any, error) {
//		return []map[string]any{{"type": "wallet_export", "address": r.PathValue("address")}}, nil
//	})(export))
func (v *Verifier) RequireDetails(scope string, details DetailsFunc) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var d any
			if details != nil {
				var err error
				if d, err = details(r); err != nil {
					http.Error(w, "cannot read the request's authorization details: "+quoteSafe(err.Error()), http.StatusBadRequest)
					return
				}
			}
			c, rej := v.CheckDetails(r.Context(), r, scope, d)
			if rej != nil {
				v.log.Info("elevated token refused", zap.String("scope", scope), zap.String("path", r.URL.Path),
					zap.String("error", rej.Challenge.Error), zap.String("detail", rej.Challenge.Description))
				rej.Write(w)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, c)))
		})
	}
}

// Rejection is a refused request: the status and the challenge to answer.
type Rejection struct {
	Status    int
	Challenge Challenge
}

func (e *Rejection) Error() string {
	return e.Challenge.Error + ": " + e.Challenge.Description
}

// Write answers the request: the status, the WWW-Authenticate challenge
// (on 401) and a JSON body {error, error_description}.
func (e *Rejection) Write(w http.ResponseWriter) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", e.Challenge.String())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(map[string]string{"error": e.Challenge.Error, "error_description": quoteSafe(e.Challenge.Description)})
}

type claimsKey struct{}

// ClaimsFromContext returns the claims of the token Require accepted.
func ClaimsFromContext(ctx context.Context) (*stepup.Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*stepup.Claims)
	return c, ok
}

// Check verifies the token r carries for scope and returns its claims, or
// the Rejection to answer with.
func (v *Verifier) Check(ctx context.Context, r *http.Request, scope string) (*stepup.Claims, *Rejection) {
	return v.CheckDetails(ctx, r, scope, nil)
}

// CheckDetails is Check for a request that acts on details (see
// RequireDetails).
func (v *Verifier) CheckDetails(ctx context.Context, r *http.Request, scope string, details any) (*stepup.Claims, *Rejection) {
	raw, err := stepup.Details(details)
	if err != nil {
		return nil, &Rejection{Status: http.StatusInternalServerError, Challenge: Challenge{Error: "server_error", Description: "the handler's authorization details do not encode as JSON"}}
	}
	want, err := api.ParseDetails(raw)
	if err != nil {
		return nil, &Rejection{Status: http.StatusInternalServerError, Challenge: Challenge{Error: "server_error", Description: "the handler's authorization details are invalid: " + err.Error()}}
	}
	proof := api.ProofParams{AuthorizationDetails: want.Raw(), DPoP: r.Header.Get("DPoP"), HTM: r.Method, HTU: v.htu(r)}
	tok := v.tokenOf(r)
	if tok == "" {
		return nil, v.insufficient(scope, "an elevated token for "+scope+" is required; step up and send it in "+v.o.Header)
	}
	var c *stepup.Claims
	if v.o.Online {
		// The scope is checked first, from the unverified claims, so that
		// a token for other scopes gets the step-up challenge (and is not
		// consumed); the agent checks everything again.
		if pc := peekClaims(tok); pc != nil && !covers(pc, []string{scope}) {
			return nil, v.insufficient(scope, "the elevated token is not for "+scope)
		}
		if pc := peekClaims(tok); pc != nil {
			if rej := v.precheck(scope, pc, want); rej != nil {
				return nil, rej
			}
			// A key-bound token's proof is checked here too, so that a
			// missing, replayed or foreign proof gets the same DPoP
			// challenge online as offline (RFC 9449 section 7.1); the
			// agent checks it again, with its own replay cache.
			if pc.Cnf != nil {
				err := token.ErrProofMissing
				if proof.DPoP != "" {
					err = v.dpop.Verify(token.Proof{JWT: proof.DPoP, HTM: proof.HTM, HTU: proof.HTU, Token: tok, JKT: pc.Cnf.JKT}, v.o.Now())
				}
				if err != nil {
					return nil, v.bindingRejection(scope, err, nil, want)
				}
			}
		}
		var rej *Rejection
		if c, rej = v.online(ctx, tok, scope, proof); rej != nil {
			return nil, rej
		}
	} else {
		var rej *Rejection
		if c, rej = v.offline(ctx, tok, scope, want, proof); rej != nil {
			return nil, rej
		}
	}
	if v.o.MaxAge > 0 && v.o.Now().Sub(time.Unix(c.AuthTime, 0)) > v.o.MaxAge+v.o.Skew {
		return nil, v.insufficient(scope, fmt.Sprintf("the user verified more than %v ago; step up again", v.o.MaxAge))
	}
	if len(v.o.ACRValues) > 0 && !slices.Contains(v.o.ACRValues, c.ACR) {
		return nil, v.insufficient(scope, "the user was verified by "+orNone(c.ACR)+"; this action needs "+strings.Join(v.o.ACRValues, " or "))
	}
	return c, nil
}

func orNone(s string) string {
	if s == "" {
		return "an unnamed method"
	}
	return s
}

// precheck refuses, before the agent is asked (which would consume a
// single-use token only when everything matches), a token whose unverified
// claims already say it is for other details or lacks a key.
func (v *Verifier) precheck(scope string, pc *tokenClaims, want *api.Details) *Rejection {
	have, err := api.ParseDetails(pc.AuthorizationDetails)
	if err == nil && !have.Equal(want) {
		return v.insufficient(scope, detailsText(have, want))
	}
	if v.o.RequireProof && pc.Cnf == nil {
		return v.needKey(scope)
	}
	return nil
}

func detailsText(have, want *api.Details) string {
	switch {
	case have == nil:
		return token.ErrDetailsUnbound.Error()
	case want == nil:
		return "the elevated token was approved for specific authorization details, not for this request"
	}
	return token.ErrDetailsMismatch.Error() + "; step up for this action"
}

// bindingRejection turns a token.CheckRequest error into the answer.
func (v *Verifier) bindingRejection(scope string, err error, have, want *api.Details) *Rejection {
	switch {
	case errors.Is(err, token.ErrDetailsMismatch), errors.Is(err, token.ErrDetailsMissing), errors.Is(err, token.ErrDetailsUnbound):
		return v.insufficient(scope, detailsText(have, want))
	case errors.Is(err, token.ErrProofMissing), errors.Is(err, token.ErrProofInvalid):
		return &Rejection{Status: http.StatusUnauthorized, Challenge: Challenge{Scheme: "DPoP", Error: ErrorInvalidDPoPProof, Description: err.Error(), Algs: dpopAlgs}}
	}
	return v.invalid(scope, "the elevated token's binding claims are malformed")
}

var dpopAlgs = []string{"EdDSA", "ES256"}

func (v *Verifier) needKey(scope string) *Rejection {
	c := v.challenge(ErrorInsufficientUserAuthentication, scope, "this service accepts only elevated tokens bound to a key: step up with cnf and send DPoP proofs")
	c.Scheme, c.Algs = "DPoP", dpopAlgs
	return &Rejection{Status: http.StatusUnauthorized, Challenge: c}
}

func (v *Verifier) htu(r *http.Request) string {
	if v.o.HTU != nil {
		return v.o.HTU(r)
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.EscapedPath()
}

func (v *Verifier) online(ctx context.Context, tok, scope string, proof api.ProofParams) (*stepup.Claims, *Rejection) {
	o := stepup.VerifyOptions{Consume: true, DPoP: proof.DPoP, HTM: proof.HTM, HTU: proof.HTU}
	if len(proof.AuthorizationDetails) > 0 {
		o.AuthorizationDetails = proof.AuthorizationDetails
	}
	if proof.DPoP == "" {
		o.HTM, o.HTU = "", ""
	}
	c, err := v.o.Client.VerifyTokenWith(ctx, tok, scope, o)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeTokenInvalid {
			// The agent's messages name the cause (expired, consumed,
			// revoked, signature, scope) and never the token.
			return nil, v.invalid(scope, ae.Message)
		}
		return nil, v.unavailable(scope, "the elevated token could not be verified: the agent did not answer")
	}
	return c, nil
}

func (v *Verifier) offline(ctx context.Context, tok, scope string, want *api.Details, proof api.ProofParams) (*stepup.Claims, *Rejection) {
	keys, err := v.keys.get(ctx, kidOf(tok))
	if err != nil {
		return nil, v.unavailable(scope, "the elevated token could not be verified: the agent's keys are unavailable")
	}
	c, err := token.VerifyWithKeys(tok, keys, v.o.Now(), v.o.Skew)
	switch {
	case errors.Is(err, token.ErrExpired):
		return nil, v.invalid(scope, "the elevated token has expired")
	case errors.Is(err, token.ErrSignature):
		return nil, v.invalid(scope, "the elevated token's signature does not verify against the agent's keys")
	case err != nil:
		return nil, v.invalid(scope, "the elevated token is not a well-formed elevated access token")
	}
	if !covers(&tokenClaims{Scope: c.Scope}, []string{scope}) {
		return nil, v.insufficient(scope, "the elevated token is not for "+scope)
	}
	if v.o.RequireProof && c.Cnf == nil {
		return nil, v.needKey(scope)
	}
	if err := token.CheckRequest(c, tok, proof, v.dpop, v.o.Now()); err != nil {
		have, _ := api.ParseDetails(c.AuthorizationDetails)
		return nil, v.bindingRejection(scope, err, have, want)
	}
	if c.SingleUse {
		// A single-use token is accepted once: only the agent knows.
		if v.o.Client == nil {
			return nil, v.invalid(scope, "a single-use elevated token must be verified online by the agent")
		}
		return v.online(ctx, tok, scope, proof)
	}
	return c, nil
}

func (v *Verifier) tokenOf(r *http.Request) string {
	val := strings.TrimSpace(r.Header.Get(v.o.Header))
	if strings.EqualFold(v.o.Header, "Authorization") {
		if len(val) > 7 && strings.EqualFold(val[:7], "Bearer ") {
			return strings.TrimSpace(val[7:])
		}
		if len(val) > 5 && strings.EqualFold(val[:5], "DPoP ") {
			return strings.TrimSpace(val[5:])
		}
		return ""
	}
	return val
}

func (v *Verifier) challenge(code, scope, desc string) Challenge {
	c := Challenge{Error: code, Description: desc, Scopes: []string{scope}, ACRValues: v.o.ACRValues}
	if v.o.RequireProof {
		c.Scheme, c.Algs = "DPoP", dpopAlgs
	}
	if v.o.MaxAge > 0 {
		c.MaxAge, c.HasMaxAge = v.o.MaxAge, true
	}
	return c
}

func (v *Verifier) insufficient(scope, desc string) *Rejection {
	return &Rejection{Status: http.StatusUnauthorized, Challenge: v.challenge(ErrorInsufficientUserAuthentication, scope, desc)}
}

func (v *Verifier) invalid(scope, desc string) *Rejection {
	return &Rejection{Status: http.StatusUnauthorized, Challenge: v.challenge(ErrorInvalidToken, scope, desc)}
}

func (v *Verifier) unavailable(scope, desc string) *Rejection {
	return &Rejection{Status: http.StatusServiceUnavailable, Challenge: Challenge{Error: "temporarily_unavailable", Description: desc, Scopes: []string{scope}}}
}
