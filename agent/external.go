package agent

import (
	"context"
	"errors"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
)

// ExternalAuth answers requestExternalAuthElevatedToken: a backend's
// signed assertion, checked against the policy's JWKS, each jti once.
func (a *Agent) ExternalAuth(ctx context.Context, p *api.ExternalAuthParams) (*api.TokenResult, error) {
	if p.Assertion == "" {
		return nil, invalidParams("assertion is required")
	}
	if err := a.checkScopes(ctx, p.RequestedScopes); err != nil {
		return nil, err
	}
	if _, err := a.checkAction(p.RequestedScopes, api.ActionParams{}); err != nil {
		return nil, err // proofOfPossession: required needs a cnf, which this method has none of
	}
	cfg := a.policy().ExternalJwt
	if a.cfg.External == nil || cfg.JWKS == "" || cfg.Subject == "" {
		return nil, api.Errorf(api.CodeNotEnrolled, "no backend is configured for external assertions").
			WithHint("set externalJwt.jwks and externalJwt.subject in the policy (docs/policy.md)")
	}
	for _, s := range p.RequestedScopes {
		if !a.rule(s).AllowsMethod(api.ExternalJWT) {
			return nil, api.Errorf(api.CodeForbidden, "scope %s does not allow external_jwt", s)
		}
	}
	defer a.methods.lock(api.ExternalJWT)()
	if a.Locked() {
		return nil, lockedError()
	}
	if err := a.limits.check(api.ExternalJWT); err != nil {
		return nil, err
	}
	jti, exp, err := a.cfg.External.Verify(ctx, p.Assertion, p.RequestedScopes, cfg)
	if err != nil && !errors.Is(err, method.ErrVerificationFailed) {
		// The JWK Set cannot be read or fetched, or the request ended:
		// the backend's or the agent's trouble, not a wrong assertion,
		// so it does not count against the method's failure limit.
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		a.log.Warn("cannot check an external assertion", zap.Error(err))
		var ae *api.Error
		if errors.As(err, &ae) {
			return nil, err
		}
		return nil, api.Errorf(api.CodeInternal, "cannot check the external assertion: %v", err).
			WithHint("check externalJwt.jwks in the policy; the agent's log says more")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil && jti == "" {
		err = errors.New("the assertion has no jti")
	}
	if err == nil && !a.replay.addNew("ext:"+jti, exp) {
		err = errors.New("the assertion was already used (its jti was seen before)")
	}
	if err != nil {
		a.limits.failure(api.ExternalJWT)
		a.audit(ctx, audit.Record{Event: "verification", Method: api.ExternalJWT, Scopes: p.RequestedScopes, Result: "verification_failed"})
		e := api.Errorf(api.CodeVerificationFailed, "external assertion refused: %s", err.Error())
		e.Data.Method = api.ExternalJWT
		return nil, e
	}
	a.limits.success(api.ExternalJWT)
	if a.locked.Load() {
		// Locked while the key set was fetched: the assertion is spent,
		// and no token is minted.
		return nil, lockedError()
	}
	return a.mint(ctx, p.RequestedScopes, api.ExternalJWT, []string{}, bindingOf(ctx, nil, nil))
}
