package agent

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
)

const enrollTTL = 10 * time.Minute

type enrollment struct {
	id      string
	method  string
	state   any
	expires time.Time
	scope   string // the scope whose token allowed it ("" for the first credential)
	label   string // the label the client asked for
}

// linkScope is the scope whose token enrolling method m needs when a
// credential already exists.
func linkScope(m string) string {
	if m == api.RecoveryCode {
		return "credential:update" // regenerating recovery codes
	}
	return "credential:link"
}

// requireToken checks that a live token for scope is held and this client
// may use it; with consume, a single-use one is consumed. Callers hold a.mu.
func (a *Agent) requireToken(ctx context.Context, scope, action string, consume bool) error {
	h := a.byScope[scope]
	if h == nil || !h.ExpiresAt.After(a.now()) || a.checkClient(ctx, a.rule(scope)) != nil {
		e := api.Errorf(api.CodeForbidden, "%s needs a step-up for %s first", action, scope).
			WithHint("run: stepupctl prompt %s", scope)
		e.Data.RequiredScope = scope
		return e
	}
	if consume && h.SingleUse {
		a.dropHeld(h)
		a.consumed[h.JTI] = h.ExpiresAt
		a.persist.put(keychain.KindConsumed, h.JTI, h.ExpiresAt)
		a.audit(ctx, audit.Record{Event: "consume", Scopes: []string{scope}, JTI: h.JTI, Result: "ok", Detail: action})
	}
	return nil
}

// EnrollStart answers enrollStart.
func (a *Agent) EnrollStart(ctx context.Context, p *api.EnrollStartParams, raw json.RawMessage) (map[string]any, error) {
	impl := a.methods[p.Method]
	if impl == nil {
		if !api.KnownMethod(p.Method) {
			return nil, invalidParams("unknown method %q; enrollable methods: totp, passkey, email_otp, sms_otp, wallet", p.Method)
		}
		return nil, api.Errorf(api.CodeNotEnrolled, "method %s is not available in this agent", p.Method)
	}
	if _, ok := impl.(method.NoCredential); ok {
		return nil, invalidParams("method %s needs no enrollment", p.Method)
	}
	a.mu.Lock()
	if a.locked {
		a.mu.Unlock()
		return nil, lockedError()
	}
	scope := ""
	if len(a.creds) > 0 {
		scope = linkScope(p.Method)
		if err := a.requireToken(ctx, scope, "adding a credential", false); err != nil {
			a.mu.Unlock()
			return nil, err
		}
	}
	if err := a.checkLimit(p.Method); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	a.mu.Unlock()

	state, res, err := impl.EnrollStart(ctx, method.EnrollParams{Label: p.Label, Address: p.Address, Phone: p.Phone, Raw: raw})
	if err != nil {
		return nil, err
	}
	e := &enrollment{id: randomID(), method: p.Method, state: state, expires: a.now().Add(enrollTTL), scope: scope, label: p.Label}
	a.mu.Lock()
	if err := a.roomFor(len(a.enrollments), "enrollments"); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	a.enrollments[e.id] = e
	a.mu.Unlock()
	out := map[string]any{}
	for k, v := range res {
		out[k] = v
	}
	out["enrollmentId"] = e.id
	out["method"] = p.Method
	return out, nil
}

// EnrollFinish answers enrollFinish.
func (a *Agent) EnrollFinish(ctx context.Context, p *api.EnrollFinishParams) (*api.EnrollFinishResult, error) {
	a.mu.Lock()
	e := a.enrollments[p.EnrollmentID]
	if e != nil && !e.expires.After(a.now()) {
		delete(a.enrollments, p.EnrollmentID)
		e = nil
	}
	if e == nil {
		a.mu.Unlock()
		return nil, invalidParams("unknown or expired enrollmentId; start again with enrollStart")
	}
	if err := a.checkLimit(e.method); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	a.mu.Unlock()
	if len(p.Response) == 0 {
		p.Response = json.RawMessage("{}")
	}
	impl := a.methods[e.method]
	cred, err := impl.EnrollFinish(ctx, e.state, p.Response)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.enrollments[e.id] != e {
		// Another enrollFinish for it won the race (or it expired while
		// the method checked): one enrollment adds one credential.
		return nil, invalidParams("unknown or expired enrollmentId; start again with enrollStart")
	}
	if err != nil {
		if errors.Is(err, method.ErrVerificationFailed) {
			a.failure(e.method)
			a.audit(ctx, audit.Record{Event: "enroll", Method: e.method, Result: "verification_failed"})
			return nil, api.Errorf(api.CodeVerificationFailed, "%s enrollment not confirmed: %s", e.method, failureText(e.method)).
				WithHint("try again with a fresh code; the enrollment stays open until it expires")
		}
		return nil, err
	}
	if a.locked {
		return nil, lockedError()
	}
	if e.scope != "" {
		if err := a.requireToken(ctx, e.scope, "adding a credential", true); err != nil {
			return nil, err
		}
	}
	delete(a.enrollments, e.id)
	a.success(e.method)
	firstMFA := api.IsMFA(e.method) && !a.hasMFA()
	if e.method == api.RecoveryCode {
		// Regenerating: the new set replaces the old one.
		for id, c := range a.creds {
			if c.Method == api.RecoveryCode {
				delete(a.creds, id)
				a.persist.del(keychain.KindCredential, id)
			}
		}
	}
	if e.label != "" {
		cred.Label = e.label
	}
	a.addCred(cred, e.method)
	res := &api.EnrollFinishResult{Method: e.method, CredentialID: cred.ID}
	a.audit(ctx, audit.Record{Event: "enroll", Method: e.method, Result: "ok", Detail: cred.ID})
	if firstMFA {
		if rg, ok := a.methods[api.RecoveryCode].(method.RecoveryGenerator); ok && len(a.credsOf(api.RecoveryCode)) == 0 {
			rc, codes, err := rg.Generate(ctx)
			if err == nil {
				a.addCred(rc, api.RecoveryCode)
				res.RecoveryCodes = codes
				a.audit(ctx, audit.Record{Event: "enroll", Method: api.RecoveryCode, Result: "ok", Detail: rc.ID})
			} else {
				a.log.Warn("cannot generate recovery codes")
			}
		}
	}
	return res, nil
}

// addCred stores a new credential. Callers hold a.mu.
func (a *Agent) addCred(c *method.Credential, m string) {
	if c.ID == "" {
		c.ID = m + "-" + randomID()[:12]
	}
	if c.Method == "" {
		c.Method = m
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = a.now().UTC().Truncate(time.Second)
	}
	if c.Label == "" {
		c.Label = m
	}
	a.creds[c.ID] = c
	a.persist.put(keychain.KindCredential, c.ID, c)
}

// ListCredentials answers listCredentials.
func (a *Agent) ListCredentials() *api.ListCredentialsResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []api.Credential{}
	for _, c := range a.creds {
		ac := api.Credential{ID: c.ID, Method: c.Method, Label: c.Label, CreatedAt: c.CreatedAt}
		if cnt, ok := a.methods[c.Method].(method.Counter); ok {
			n := cnt.Remaining(c)
			ac.Remaining = &n
		}
		out = append(out, ac)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return &api.ListCredentialsResult{Credentials: out}
}

// RemoveCredential answers removeCredential; it consumes a
// credential:unlink token. Removing the last TOTP or passkey credential
// removes the recovery codes too: they recover access to nothing.
func (a *Agent) RemoveCredential(ctx context.Context, id string) (*api.RemoveCredentialResult, error) {
	if id == "" {
		return nil, invalidParams("credentialId is required; stepupctl credentials lists them")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.locked {
		return nil, lockedError()
	}
	c := a.creds[id]
	if c == nil {
		return nil, api.Errorf(api.CodeNotEnrolled, "no credential has id %s", id).WithHint("stepupctl credentials lists them")
	}
	if err := a.requireToken(ctx, "credential:unlink", "removing a credential", true); err != nil {
		return nil, err
	}
	delete(a.creds, id)
	a.persist.del(keychain.KindCredential, id)
	a.audit(ctx, audit.Record{Event: "remove", Method: c.Method, Result: "ok", Detail: id})
	primary := false
	for _, o := range a.creds {
		primary = primary || (api.IsMFA(o.Method) && o.Method != api.RecoveryCode)
	}
	if !primary {
		for rid, o := range a.creds {
			if o.Method == api.RecoveryCode {
				delete(a.creds, rid)
				a.persist.del(keychain.KindCredential, rid)
				a.audit(ctx, audit.Record{Event: "remove", Method: o.Method, Result: "ok", Detail: rid})
			}
		}
	}
	return &api.RemoveCredentialResult{Removed: true}, nil
}

// ExternalAuth answers requestExternalAuthElevatedToken: a backend's
// signed assertion, checked against the policy's JWKS, each jti once.
func (a *Agent) ExternalAuth(ctx context.Context, p *api.ExternalAuthParams) (*api.TokenResult, error) {
	if p.Assertion == "" {
		return nil, invalidParams("assertion is required")
	}
	if err := a.checkScopes(ctx, p.RequestedScopes); err != nil {
		return nil, err
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
	mm := a.methodMu[api.ExternalJWT]
	mm.Lock()
	defer mm.Unlock()
	a.mu.Lock()
	if a.locked {
		a.mu.Unlock()
		return nil, lockedError()
	}
	if err := a.checkLimit(api.ExternalJWT); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	a.mu.Unlock()
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
	if err == nil {
		if _, seen := a.replay["ext:"+jti]; seen {
			err = errors.New("the assertion was already used (its jti was seen before)")
		}
	}
	if err != nil {
		a.failure(api.ExternalJWT)
		a.audit(ctx, audit.Record{Event: "verification", Method: api.ExternalJWT, Scopes: p.RequestedScopes, Result: "verification_failed"})
		e := api.Errorf(api.CodeVerificationFailed, "external assertion refused: %s", err.Error())
		e.Data.Method = api.ExternalJWT
		return nil, e
	}
	a.success(api.ExternalJWT)
	a.replay["ext:"+jti] = exp
	a.persist.put(keychain.KindReplay, "ext:"+jti, exp)
	if a.locked {
		// Locked while the key set was fetched: the assertion is spent,
		// and no token is minted.
		return nil, lockedError()
	}
	return a.mint(ctx, p.RequestedScopes, api.ExternalJWT, []string{})
}
