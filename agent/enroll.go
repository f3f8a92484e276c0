package agent

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/peer"
)

const enrollTTL = 10 * time.Minute

// enrollment is an enrollment under way.
type enrollment struct {
	method string
	state  any
	scope  string // the scope whose token allowed it ("" for the first credential)
	label  string // the label the client asked for
}

// linkScope is the scope whose token enrolling method m needs when a
// credential already exists.
func linkScope(m string) string {
	if m == api.RecoveryCode {
		return "credential:update" // regenerating recovery codes
	}
	return "credential:link"
}

// requireToken checks that a live token for scope is held that this
// client could get (its binding admits the caller, the clients lists of
// its scopes allow it; details and key are not asked for); with consume,
// a single-use one is consumed.
func (a *Agent) requireToken(ctx context.Context, scope, action string, consume bool) error {
	h, _ := a.tokens.bestFor(scope, a.now(), want{caller: peer.FromContext(ctx)})
	if h == nil || a.checkClient(ctx, a.rule(scope)) != nil || !a.clientsAllow(ctx, h) || consume && h.SingleUse && !a.tokens.consume(h) {
		e := api.Errorf(api.CodeForbidden, "%s needs a step-up for %s first", action, scope).
			WithHint("run: stepupctl prompt %s", scope)
		e.Data.RequiredScope = scope
		return e
	}
	if consume && h.SingleUse {
		a.audit(ctx, audit.Record{Event: "consume", Scopes: []string{scope}, JTI: h.JTI, Result: "ok", Detail: action})
	}
	return nil
}

// EnrollStart answers enrollStart.
func (a *Agent) EnrollStart(ctx context.Context, p *api.EnrollStartParams) (*api.EnrollStartResult, error) {
	impl := a.methods.get(p.Method)
	if impl == nil {
		if !api.KnownMethod(p.Method) {
			return nil, invalidParams("unknown method %q; enrollable methods: totp, passkey, email_otp, sms_otp, wallet", p.Method)
		}
		return nil, api.Errorf(api.CodeNotEnrolled, "method %s is not available in this agent", p.Method)
	}
	if _, ok := impl.(method.NoCredential); ok {
		return nil, invalidParams("method %s needs no enrollment", p.Method)
	}
	if a.Locked() {
		return nil, lockedError()
	}
	scope := ""
	if a.creds.count() > 0 {
		scope = linkScope(p.Method)
		if err := a.requireToken(ctx, scope, "adding a credential", false); err != nil {
			return nil, err
		}
	}
	if err := a.limits.check(p.Method); err != nil {
		return nil, err
	}

	// Hold a place under the caps first: past them nothing is started
	// (no passkey page, no email or SMS sent).
	o, err := a.enrollments.reserve(ownerOf(ctx), false, a.now())
	if err != nil {
		return nil, err
	}
	state, payload, err := impl.EnrollStart(ctx, method.EnrollParams{Label: p.Label, Address: p.Address, Phone: p.Phone, Raw: p.Raw})
	if err != nil {
		a.enrollments.release(o)
		return nil, err
	}
	a.enrollments.fill(o, &enrollment{method: p.Method, state: state, scope: scope, label: p.Label})
	return api.NewEnrollStartResult(o.ID, p.Method, payload), nil
}

// EnrollFinish answers enrollFinish.
func (a *Agent) EnrollFinish(ctx context.Context, p *api.EnrollFinishParams) (*api.EnrollFinishResult, error) {
	o := a.enrollments.get(p.EnrollmentID, a.now())
	if o == nil {
		return nil, invalidParams("unknown or expired enrollmentId; start again with enrollStart")
	}
	e := o.Val
	if err := a.limits.check(e.method); err != nil {
		return nil, err
	}
	if len(p.Response) == 0 {
		p.Response = json.RawMessage("{}")
	}
	// As in finish: the try counts before the method checks it, and is
	// given back when the answer is right or could not be checked.
	_, _, at := a.limits.attempt(e.method)
	cred, err := a.methods.get(e.method).EnrollFinish(ctx, e.state, p.Response)
	if err == nil || !errors.Is(err, method.ErrVerificationFailed) && ctx.Err() == nil {
		a.limits.refund(e.method, at)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.enrollments.holds(o) {
		// Another enrollFinish for it won the race (or it expired while
		// the method checked): one enrollment adds one credential.
		return nil, invalidParams("unknown or expired enrollmentId; start again with enrollStart")
	}
	if err != nil {
		if errors.Is(err, method.ErrVerificationFailed) {
			a.audit(ctx, audit.Record{Event: "enroll", Method: e.method, Result: "verification_failed"})
			return nil, api.Errorf(api.CodeVerificationFailed, "%s enrollment not confirmed: %s", e.method, failureText(e.method)).
				WithHint("try again with a fresh code; the enrollment stays open until it expires")
		}
		return nil, err
	}
	if a.locked.Load() {
		return nil, lockedError()
	}
	// Whether a link token is needed is decided now, not only at
	// enrollStart: an enrollment opened before the first credential
	// landed (by another program, say) needs one like any other.
	scope := e.scope
	if scope == "" && a.creds.count() > 0 {
		scope = linkScope(e.method)
	}
	if scope != "" {
		if err := a.requireToken(ctx, scope, "adding a credential", true); err != nil {
			if e.scope == "" {
				var ae *api.Error
				if errors.As(err, &ae) {
					ae.Message = "a credential was enrolled after this enrollment started; adding another one needs a step-up for " + scope + " first"
					ae.Data.Hint = "run: stepupctl prompt " + scope + ", then enroll again"
				}
			}
			return nil, err
		}
	}
	if !a.enrollments.take(o) {
		return nil, invalidParams("unknown or expired enrollmentId; start again with enrollStart")
	}
	a.limits.success(e.method)
	firstMFA := api.IsMFA(e.method) && !a.creds.hasMFA()
	if e.method == api.RecoveryCode {
		// Regenerating: the new set replaces the old one.
		a.creds.removeMethod(api.RecoveryCode)
	}
	if e.label != "" {
		cred.Label = e.label
	}
	a.addCred(cred, e.method)
	res := &api.EnrollFinishResult{Method: e.method, CredentialID: cred.ID}
	a.audit(ctx, audit.Record{Event: "enroll", Method: e.method, Result: "ok", Detail: cred.ID})
	if firstMFA {
		if rg, ok := a.methods.get(api.RecoveryCode).(method.RecoveryGenerator); ok && len(a.creds.of(api.RecoveryCode)) == 0 {
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

// addCred fills in what the method left empty and stores a new credential.
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
	a.creds.add(c)
}

// ListCredentials answers listCredentials.
func (a *Agent) ListCredentials() *api.ListCredentialsResult {
	out := []api.Credential{}
	for _, c := range a.creds.all() {
		ac := api.Credential{ID: c.ID, Method: c.Method, Label: c.Label, CreatedAt: c.CreatedAt}
		if cnt, ok := a.methods.get(c.Method).(method.Counter); ok {
			n := cnt.Remaining(&c)
			ac.Remaining = &n
		}
		out = append(out, ac)
	}
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
	if a.locked.Load() {
		return nil, lockedError()
	}
	c, ok := a.creds.get(id)
	if !ok {
		return nil, api.Errorf(api.CodeNotEnrolled, "no credential has id %s", id).WithHint("stepupctl credentials lists them")
	}
	if err := a.requireToken(ctx, "credential:unlink", "removing a credential", true); err != nil {
		return nil, err
	}
	a.creds.remove(id)
	a.audit(ctx, audit.Record{Event: "remove", Method: c.Method, Result: "ok", Detail: id})
	if !a.creds.hasPrimary() {
		for _, rid := range a.creds.removeMethod(api.RecoveryCode) {
			a.audit(ctx, audit.Record{Event: "remove", Method: api.RecoveryCode, Result: "ok", Detail: rid})
		}
	}
	return &api.RemoveCredentialResult{Removed: true}, nil
}
