package agent

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/policy"
	"github.com/stepup-agent/stepup-agent/token"
)

// IsStepUpRequired answers isStepUpRequired: required is false only when
// the policy says the scope needs no step-up, or a live token for it is
// held and this client may use it.
func (a *Agent) IsStepUpRequired(ctx context.Context, scope string) (*api.StepUpRequired, error) {
	if scope == "" {
		return nil, invalidParams("scope is required, e.g. {\"scope\":\"wallet:export\"}")
	}
	if err := policy.CheckScope(scope); err != nil {
		return nil, invalidParams("invalid scope: %v", err)
	}
	r := a.rule(scope)
	if r.Denied {
		return nil, api.Errorf(api.CodeUnknownScope, "the policy does not name scope %s and denies unknown scopes", scope).
			WithHint("add the scope to the policy's scopes, or set unknownScopes: require")
	}
	res := &api.StepUpRequired{Scope: scope, Methods: []string{}}
	if !r.Required {
		return res, nil
	}
	res.Required = true
	if h := a.tokens.best(scope, a.now(), remoteKey(ctx)); h != nil && !a.Locked() {
		if a.checkClient(ctx, r) == nil {
			res.Required = false
			exp := h.ExpiresAt
			res.ExpiresAt = &exp
			return res, nil
		}
	}
	res.Methods, _ = a.available(routeAuto, []string{scope})
	if len(res.Methods) > 0 {
		res.DefaultMethod = res.Methods[0]
	}
	return res, nil
}

// mint makes, holds and returns a token for scopes, verified with m.
// Callers hold a.mu, so that no lock lands between their check and the
// mint.
func (a *Agent) mint(ctx context.Context, scopes []string, m string, amr []string) (*api.TokenResult, error) {
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
	tok, err := a.signer.Mint(api.Claims{
		Issuer: "stepup-agent", Subject: a.subject, Scope: strings.Join(scopes, " "), ID: jti,
		IssuedAt: now.Unix(), Expiry: exp.Unix(), AuthTime: now.Unix(), AMR: amr, SingleUse: single,
	})
	if err != nil {
		return nil, err
	}
	h := &held{JTI: jti, Token: tok, Scopes: scopes, ExpiresAt: exp, SingleUse: single, Method: m, Remote: remoteKey(ctx)}
	a.tokens.add(h)
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

// GetToken hands the held token for scope to a client allowed to use it.
func (a *Agent) GetToken(ctx context.Context, scope string) (*api.GetTokenResult, error) {
	if scope == "" {
		return nil, invalidParams("scope is required")
	}
	if err := checkScopeName("scope", scope); err != nil {
		return nil, err
	}
	r := a.rule(scope)
	if err := a.checkClient(ctx, r); err != nil {
		return nil, err
	}
	h := a.tokens.best(scope, a.now(), remoteKey(ctx))
	if h == nil {
		return nil, api.Errorf(api.CodeTokenInvalid, "no live token is held for %s", scope).
			WithHint("step up first: stepupctl prompt %s", scope)
	}
	return &api.GetTokenResult{Token: h.Token, Scopes: h.Scopes, ExpiresAt: h.ExpiresAt.UTC(), SingleUse: h.SingleUse}, nil
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
	now := a.now()
	c, err := a.signer.Verify(p.Token, now)
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
	n := a.tokens.revoke(scopes)
	a.audit(ctx, audit.Record{Event: "reset", Scopes: scopes, Revoked: n, Result: "ok"})
	return &api.ResetResult{Revoked: n}
}
