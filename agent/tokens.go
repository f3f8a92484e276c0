package agent

import (
	"context"
	"errors"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/policy"
	"github.com/stepup-agent/stepup-agent/token"
	"go.uber.org/zap"
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
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if h := a.byScope[scope]; h != nil && h.ExpiresAt.After(now) && !a.locked {
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
// Callers hold a.mu.
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
	h := &held{JTI: jti, Token: tok, Scopes: scopes, ExpiresAt: exp, SingleUse: single, Method: m}
	a.addHeld(h)
	a.persist.put(keychain.KindToken, jti, h)
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
	r := a.rule(scope)
	if err := a.checkClient(ctx, r); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.byScope[scope]
	if h == nil || !h.ExpiresAt.After(a.now()) {
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
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.tokens[c.ID]
	if h == nil {
		detail := "revoked"
		msg := "the token was revoked (reset, lock or sleep)"
		if _, ok := a.consumed[c.ID]; ok {
			detail, msg = "consumed", "the single-use token was already used"
		}
		a.audit(ctx, audit.Record{Event: "verify", Scopes: []string{p.Scope}, JTI: c.ID, Result: "token_invalid", Detail: detail})
		return nil, api.Errorf(api.CodeTokenInvalid, "%s", msg).WithHint("step up again")
	}
	if p.Consume && h.SingleUse {
		a.dropHeld(h)
		a.consumed[c.ID] = h.ExpiresAt
		a.persist.put(keychain.KindConsumed, c.ID, h.ExpiresAt)
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
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.revoke(scopes)
	a.audit(ctx, audit.Record{Event: "reset", Scopes: scopes, Revoked: n, Result: "ok"})
	return &api.ResetResult{Revoked: n}
}

// revoke drops the tokens whose scopes meet scopes (all when empty) and
// returns how many. Callers hold a.mu.
func (a *Agent) revoke(scopes []string) int {
	n := 0
	for _, h := range a.tokens {
		hit := len(scopes) == 0
		for _, s := range scopes {
			hit = hit || contains(h.Scopes, s)
		}
		if hit {
			a.dropHeld(h)
			n++
		}
	}
	return n
}

// Lock revokes every token and refuses prompts until unlocked by a
// verification (stepupctl lock / the lock method).
func (a *Agent) Lock(ctx context.Context, reason string) int {
	return a.lock(ctx, reason, &a.manualLock)
}

// LockSession is Lock for the session manager (screen lock, sleep): the
// session's unlock (UnlockSession) lifts it, without a verification.
func (a *Agent) LockSession(ctx context.Context, reason string) int {
	return a.lock(ctx, reason, &a.sessionLock)
}

func (a *Agent) lock(ctx context.Context, reason string, src *bool) int {
	a.mu.Lock()
	n := a.revoke(nil)
	*src = true
	a.locked = true
	for id, c := range a.challenges {
		if !c.unlock {
			delete(a.challenges, id)
		}
	}
	a.mu.Unlock()
	a.audit(ctx, audit.Record{Event: "lock", Detail: reason, Revoked: n, Result: "ok"})
	a.log.Info("locked: every token revoked", zap.String("reason", reason))
	return n
}

// UnlockSession lifts a lock the session manager set (the user just
// unlocked the screen, or the machine resumed). A lock set by stepupctl
// lock stays until stepupctl unlock verifies the user.
func (a *Agent) UnlockSession(ctx context.Context, reason string) {
	a.mu.Lock()
	was := a.sessionLock
	a.sessionLock = false
	a.locked = a.manualLock
	still := a.locked
	a.mu.Unlock()
	if was {
		a.audit(ctx, audit.Record{Event: "unlock", Detail: reason, Result: "ok"})
		if still {
			a.log.Info("session unlocked; the agent stays locked until stepupctl unlock", zap.String("reason", reason))
		} else {
			a.log.Info("unlocked", zap.String("reason", reason))
		}
	}
}

// Unlock lifts every lock. The agent calls it after a verification (or
// when nothing is enrolled to verify with).
func (a *Agent) Unlock(ctx context.Context, reason string) {
	a.mu.Lock()
	was := a.locked
	a.unlockAll()
	a.mu.Unlock()
	if was {
		a.audit(ctx, audit.Record{Event: "unlock", Detail: reason, Result: "ok"})
		a.log.Info("unlocked", zap.String("reason", reason))
	}
}

// unlockAll clears every lock. Callers hold a.mu.
func (a *Agent) unlockAll() {
	a.locked, a.manualLock, a.sessionLock = false, false, false
}

// Locked reports whether the agent is locked.
func (a *Agent) Locked() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.locked
}

// Status answers status. It never carries token values or secrets.
func (a *Agent) Status() *api.Status {
	st := &api.Status{Version: Version, PID: os.Getpid(), Tokens: []api.TokenStatus{}, Socket: a.cfg.Socket}
	st.Keychain = keychainStatus(a.cfg.Store)
	if a.cfg.PolicyStatus != nil {
		st.Policy = a.cfg.PolicyStatus()
	}
	st.Prompter = a.cfg.Prompts().Name()
	st.Audit = a.auditStatus()
	now := a.now()
	a.mu.Lock()
	for s, h := range a.byScope {
		if h.ExpiresAt.After(now) {
			st.Tokens = append(st.Tokens, api.TokenStatus{Scope: s, ExpiresAt: h.ExpiresAt.UTC(), SingleUse: h.SingleUse, Method: h.Method})
		}
	}
	st.Credentials = len(a.creds)
	st.Locked = a.locked
	a.mu.Unlock()
	sort.Slice(st.Tokens, func(i, j int) bool { return st.Tokens[i].Scope < st.Tokens[j].Scope })
	return st
}

// TokenCount is the number of live tokens held (for sd_notify STATUS=).
func (a *Agent) TokenCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.tokens)
}

func keychainStatus(s keychain.Store) api.KeychainStatus {
	ks := api.KeychainStatus{Backend: s.Backend(), Available: true}
	if av, ok := s.(interface{ Available() bool }); ok {
		ks.Available = av.Available()
	}
	if w, ok := s.(keychain.Warner); ok {
		ks.Warning = w.Warning()
	}
	return ks
}
