package agent

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/peer"
	"github.com/stepup-agent/stepup-agent/policy"
	"github.com/stepup-agent/stepup-agent/token"
)

// binding is what a token about to be minted is bound to: the caller
// that stepped up (read at accept), the approved details, the key.
type binding struct {
	minter  *peer.Identity
	details *api.Details
	cnf     *api.Cnf
}

// bindingOf is the binding of a step-up by ctx's caller.
func bindingOf(ctx context.Context, details *api.Details, cnf *api.Cnf) binding {
	return binding{minter: peer.FromContext(ctx), details: details, cnf: cnf}
}

// checkAction validates a request's action and key fields for scopes:
// the details (-32602 with the reason), the cnf thumbprint, and a scope
// that requires proof of possession without a cnf (4005). It returns
// the parsed details (nil for none).
func (a *Agent) checkAction(scopes []string, ap api.ActionParams) (*api.Details, error) {
	d, err := api.ParseDetails(ap.AuthorizationDetails)
	if err != nil {
		return nil, err
	}
	if err := ap.Cnf.Check(); err != nil {
		return nil, err
	}
	if ap.Cnf == nil {
		for _, s := range scopes {
			if a.rule(s).ProofRequired {
				return nil, api.Errorf(api.CodeForbidden, "scope %s is only minted bound to a key (proofOfPossession: required), and the request has no cnf", s).
					WithHint("send cnf: {jkt} with the thumbprint of your DPoP key (the Go RoundTripper and the Node fetch wrapper do it), or set proofOfPossession: optional for the scope")
			}
		}
	}
	return d, nil
}

// modesOf returns the bind modes of scopes, one per scope.
func (a *Agent) modesOf(scopes []string) []peer.Mode {
	out := make([]peer.Mode, len(scopes))
	for i, s := range scopes {
		out[i] = a.rule(s).Bind
	}
	return out
}

// IsStepUpRequired answers isStepUpRequired: required is false only when
// the policy says the scope needs no step-up, or a live token for it is
// held for these details and key, and its binding admits this caller.
// It is the hot path: no audit record, nothing allocated per held token.
func (a *Agent) IsStepUpRequired(ctx context.Context, p *api.ScopeParams) (*api.StepUpRequired, error) {
	res := new(api.StepUpRequired)
	if err := a.checkInto(ctx, p, res, nil); err != nil {
		return nil, err
	}
	res.Methods, res.Credentials = slices.Clone(res.Methods), slices.Clone(res.Credentials)
	return res, nil
}

// checkAnswer is an isStepUpRequired answer for the socket, from a pool:
// the server encodes it (AppendJSON, promoted) and then releases it
// (ipc.Releaser); its expiry lives beside it, so that neither the answer
// nor its ExpiresAt is allocated per request.
type checkAnswer struct {
	api.StepUpRequired
	exp time.Time
}

var checkAnswers = sync.Pool{New: func() any { return new(checkAnswer) }}

// Release is ipc.Releaser: the answer is written and goes back.
func (c *checkAnswer) Release() {
	if c == nil {
		return
	}
	*c = checkAnswer{}
	checkAnswers.Put(c)
}

// checkInto is IsStepUpRequired into res; exp, when not nil, holds the
// expiry res.ExpiresAt points to (else it is allocated).
func (a *Agent) checkInto(ctx context.Context, p *api.ScopeParams, res *api.StepUpRequired, exp *time.Time) error {
	scope := p.Scope
	if scope == "" {
		return invalidParams("scope is required, e.g. {\"scope\":\"wallet:export\"}")
	}
	if err := policy.CheckScope(scope); err != nil {
		return invalidParams("invalid scope: %v", err)
	}
	r := a.rule(scope)
	if r.Denied {
		return api.Errorf(api.CodeUnknownScope, "the policy does not name scope %s and denies unknown scopes", scope).
			WithHint("add the scope to the policy's scopes, or set unknownScopes: require")
	}
	d, err := api.ParseDetails(p.AuthorizationDetails)
	if err != nil {
		return err
	}
	if err := p.Cnf.Check(); err != nil {
		return err
	}
	res.Scope, res.Methods = scope, []string{}
	res.Bind = string(r.Bind)
	if !r.Required {
		return nil
	}
	res.Required = true
	if err := a.checkClient(ctx, r); err != nil {
		// No step-up can help this client: say so rather than offer
		// methods (DESIGN.md: 4005 for a client the scope leaves out).
		return err
	}
	locked := a.Locked()
	res.Locked = locked
	if !locked {
		w := want{caller: peer.FromContext(ctx), details: d.Canonical(), cnf: p.Cnf}
		if h, _ := a.tokens.bestAt(scope, a.now, w); h != nil && a.clientsAllow(ctx, h) {
			res.Required = false
			if exp == nil {
				exp = new(time.Time)
			}
			*exp = h.ExpiresAt
			res.ExpiresAt = exp
			return nil
		}
	}
	// The offer is shared (offer.go): callers other than the socket's
	// pooled answer copy its slices.
	o := a.offerFor(scope)
	res.Methods, res.DefaultMethod = o.methods, o.defaultMethod
	res.Credentials, res.DefaultCredentialID = o.creds, o.defaultCred
	return nil
}

// credentialRefs lists the credentials of methods (in their order), and
// the first as the default (Dynamic's checkStepUpAuth list).
func (a *Agent) credentialRefs(methods []string) ([]api.CredentialRef, string) {
	var out []api.CredentialRef
	for _, m := range methods {
		for _, c := range a.creds.of(m) {
			out = append(out, api.CredentialRef{ID: c.ID, Method: c.Method, Label: c.Label})
		}
	}
	if len(out) == 0 {
		return nil, ""
	}
	return out, out[0].ID
}

// clientsAllow reports whether every scope of h lets ctx's client use it
// (the policy's clients lists): a token is handed out only where each of
// its scopes allows the caller, not only the scope asked about.
func (a *Agent) clientsAllow(ctx context.Context, h *held) bool {
	for _, s := range h.Scopes {
		if a.checkClient(ctx, a.rule(s)) != nil {
			return false
		}
	}
	return true
}

// mint makes, holds and returns a token for scopes, verified with m and
// bound as b says. Callers hold a.mu, so that no lock lands between
// their check and the mint.
func (a *Agent) mint(ctx context.Context, scopes []string, m string, amr []string, b binding) (*api.TokenResult, error) {
	now := a.now()
	ttl := time.Duration(0)
	single := false
	for _, s := range scopes {
		r := a.rule(s)
		if ttl == 0 || r.TTL < ttl {
			ttl = r.TTL
		}
		single = single || r.SingleUse
	}
	exp := now.Add(ttl).Truncate(time.Second)
	jti := randomID()
	scopes = normScopes(scopes)
	if amr == nil {
		amr = []string{}
	}
	claims := api.Claims{
		Issuer: "stepup-agent", Subject: a.subject, Scope: strings.Join(scopes, " "), ID: jti,
		IssuedAt: now.Unix(), Expiry: exp.Unix(), AuthTime: now.Unix(), AMR: amr, SingleUse: single,
	}
	token.SetBinding(&claims, m, b.details, b.cnf)
	tok, err := a.signer.Mint(claims)
	if err != nil {
		return nil, err
	}
	h := &held{JTI: jti, Token: tok, Scopes: scopes, ExpiresAt: exp, SingleUse: single, Method: m,
		Minter: b.minter, Bind: a.modesOf(scopes), Details: b.details.Canonical(), Cnf: claims.Cnf, Remote: remoteKey(ctx)}
	a.tokens.add(h)
	grantsOf(ctx).add(h)
	a.audit(ctx, audit.Record{Event: "stepup", Method: m, Scopes: scopes, JTI: jti, Result: "ok"})
	return &api.TokenResult{Token: tok, Scopes: scopes, ExpiresAt: exp.UTC(), SingleUse: single, Method: m}, nil
}

func normScopes(scopes []string) []string {
	out := append([]string(nil), scopes...)
	sort.Strings(out)
	j := 0
	for i, s := range out {
		if i == 0 || s != out[j-1] {
			out[j] = s
			j++
		}
	}
	return out[:j]
}

// GetToken hands the held token for scope, for these details and key,
// to a caller its binding admits and the policy's clients lists allow.
func (a *Agent) GetToken(ctx context.Context, p *api.ScopeParams) (*api.GetTokenResult, error) {
	res := new(api.GetTokenResult)
	if err := a.getTokenInto(ctx, p, res); err != nil {
		return nil, err
	}
	return res, nil
}

// tokenAnswer is getToken's answer for the socket, from a pool, as
// checkAnswer is isStepUpRequired's.
type tokenAnswer struct {
	api.GetTokenResult
}

var tokenAnswers = sync.Pool{New: func() any { return new(tokenAnswer) }}

// Release is ipc.Releaser.
func (t *tokenAnswer) Release() {
	if t == nil {
		return
	}
	*t = tokenAnswer{}
	tokenAnswers.Put(t)
}

// getTokenInto is GetToken into res.
func (a *Agent) getTokenInto(ctx context.Context, p *api.ScopeParams, res *api.GetTokenResult) error {
	scope := p.Scope
	if scope == "" {
		return invalidParams("scope is required")
	}
	if err := checkScopeName("scope", scope); err != nil {
		return err
	}
	d, err := api.ParseDetails(p.AuthorizationDetails)
	if err != nil {
		return err
	}
	if err := p.Cnf.Check(); err != nil {
		return err
	}
	r := a.rule(scope)
	if err := a.checkClient(ctx, r); err != nil {
		return err
	}
	w := want{caller: peer.FromContext(ctx), details: d.Canonical(), cnf: p.Cnf}
	h, refused := a.tokens.bestFor(scope, a.now(), w)
	if h != nil && !a.clientsAllow(ctx, h) {
		return api.Errorf(api.CodeForbidden, "%s may not use every scope of the token held for %s (%s)", orUnknown(clientExe(ctx)), scope, strings.Join(h.Scopes, " ")).
			WithHint("the policy's clients lists of those scopes name the executables allowed to use them")
	}
	if h == nil && refused != nil {
		bind := make([]string, len(refused.Bind))
		for i, m := range refused.Bind {
			bind[i] = string(m)
		}
		boundTo := peer.Describe(refused.Bind, refused.Minter)
		a.audit(ctx, audit.Record{Event: audit.EventBindRefusal, Scopes: []string{scope}, JTI: refused.JTI, Result: "token_invalid", Caller: clientDesc(ctx), Detail: "bound to " + boundTo})
		return api.Errorf(api.CodeTokenInvalid, "no token for %s is held for this program", scope).
			WithHint("%s", api.BindingRefusedHint(boundTo, strings.Join(bind, ", ")))
	}
	if h == nil {
		return api.Errorf(api.CodeTokenInvalid, "no live token is held for %s", scope).
			WithHint("step up first: stepupctl prompt %s", scope)
	}
	*res = api.GetTokenResult{Token: h.Token, Scopes: h.Scopes, ExpiresAt: h.ExpiresAt.UTC(), SingleUse: h.SingleUse}
	return nil
}

// VerifyToken checks a token for a relying party and, with consume,
// consumes a single-use one.
func (a *Agent) VerifyToken(ctx context.Context, p *api.VerifyTokenParams) (*api.VerifyTokenResult, error) {
	if p.Token == "" || p.Scope == "" {
		return nil, invalidParams("token and scope are required")
	}
	if err := checkScopeName("scope", p.Scope); err != nil {
		return nil, err
	}
	if _, err := api.ParseDetails(p.AuthorizationDetails); err != nil {
		return nil, err
	}
	now := a.now()
	// A token the agent holds is the string it signed: its claims are
	// read without checking the signature again (token.HeldClaims).
	// Anything else, a revoked or consumed token included, is verified.
	var c *api.Claims
	var err error
	if a.tokens.heldToken(p.Token) != nil {
		c, err = token.HeldClaims(p.Token, now)
	} else {
		c, err = a.signer.Verify(p.Token, now)
	}
	if err != nil {
		msg := "the token is not valid"
		switch {
		case errors.Is(err, token.ErrExpired):
			msg = "the token has expired"
		case errors.Is(err, token.ErrSignature):
			msg = "the token's signature does not verify against this agent's keys"
		case errors.Is(err, token.ErrMalformed):
			msg = "the token is not a well-formed elevated access token"
		}
		a.audit(ctx, audit.Record{Event: "verify", Scopes: []string{p.Scope}, Result: "token_invalid", Detail: msg})
		return nil, api.Errorf(api.CodeTokenInvalid, "%s", msg)
	}
	if !contains(strings.Fields(c.Scope), p.Scope) {
		a.audit(ctx, audit.Record{Event: "verify", Scopes: []string{p.Scope}, JTI: c.ID, Result: "token_invalid", Detail: "wrong scope"})
		return nil, api.Errorf(api.CodeTokenInvalid, "the token is not for scope %s", p.Scope)
	}
	h := a.tokens.get(c.ID)
	if h != nil {
		// The action and the key, before anything is consumed: a
		// refused verifyToken never consumes.
		if err := token.CheckRequest(c, p.Token, p.ProofParams, a.dpop, now); err != nil {
			a.audit(ctx, audit.Record{Event: "verify", Scopes: []string{p.Scope}, JTI: c.ID, Result: "token_invalid", Detail: err.Error()})
			e := api.Errorf(api.CodeTokenInvalid, "%s", err.Error())
			if errors.Is(err, token.ErrProofMissing) || errors.Is(err, token.ErrProofInvalid) {
				e = e.WithHint("send the client's DPoP proof for this request as dpop, with htm and htu (RFC 9449)")
			} else {
				e = e.WithHint("step up for this action")
			}
			return nil, e
		}
	}
	consumed := p.Consume && h != nil && h.SingleUse && a.tokens.consume(h)
	if h == nil || p.Consume && h.SingleUse && !consumed {
		detail := "revoked"
		msg := "the token was revoked (reset, lock or sleep)"
		if a.tokens.wasConsumed(c.ID) {
			detail, msg = "consumed", "the single-use token was already used"
		}
		a.audit(ctx, audit.Record{Event: "verify", Scopes: []string{p.Scope}, JTI: c.ID, Result: "token_invalid", Detail: detail})
		return nil, api.Errorf(api.CodeTokenInvalid, "%s", msg).WithHint("step up again")
	}
	if consumed {
		a.audit(ctx, audit.Record{Event: "consume", Scopes: []string{p.Scope}, JTI: c.ID, Result: "ok"})
	} else {
		a.audit(ctx, audit.Record{Event: "verify", Scopes: []string{p.Scope}, JTI: c.ID, Result: "ok"})
	}
	if c.AMR == nil {
		c.AMR = []string{}
	}
	return &api.VerifyTokenResult{Valid: true, Claims: *c}, nil
}

// ResetState revokes the tokens of scopes, or all.
func (a *Agent) ResetState(ctx context.Context, scopes []string) *api.ResetResult {
	n := a.tokens.revoke(anyCaller, scopes)
	a.audit(ctx, audit.Record{Event: "reset", Scopes: scopes, Revoked: n, Result: "ok"})
	return &api.ResetResult{Revoked: n}
}
