package agent

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/policy"
)

// route is which family of methods a request may use.
type route int

const (
	routeAuto   route = iota // promptStepUpAuth: MFA when enrolled, else re-auth
	routeMFA                 // promptMfa
	routeReauth              // promptReauthenticate
)

func routeOf(m string) route {
	switch m {
	case api.MethodPromptMfa:
		return routeMFA
	case api.MethodPromptReauthenticate:
		return routeReauth
	}
	return routeAuto
}

// challengeTTL bounds a custom-UI challenge's life.
const challengeTTL = 10 * time.Minute

// challenge is a verification under way.
type challenge struct {
	method string
	scopes []string
	state  any
	unlock bool // purpose "unlock": unlocks instead of minting
	uid    int
	bind   binding // what the token will be bound to (tokens.go)
	done   bool    // answered: it mints (or unlocks) once. Guarded by a.mu.
}

// usable reports whether method m can verify the user now.
func (a *Agent) usable(m string) bool {
	impl := a.methods.get(m)
	if impl == nil {
		return false
	}
	if av, ok := impl.(method.Availability); ok && av.Available() != nil {
		return false // a reader unplugged, fprintd gone: not offered now
	}
	if nc, ok := impl.(method.NoCredential); ok && nc.NeedsNoCredential() {
		return true
	}
	creds := a.creds.of(m)
	if cnt, ok := impl.(method.Counter); ok {
		for _, c := range creds {
			if cnt.Remaining(c) > 0 {
				return true
			}
		}
		return false
	}
	return len(creds) > 0
}

// available lists, in order of preference, the methods a request on route
// for scopes may use now. When none is usable, err says why.
func (a *Agent) available(rt route, scopes []string) ([]string, error) {
	mfa := a.creds.hasMFA()
	var family []string
	switch rt {
	case routeMFA:
		if !mfa {
			return nil, api.Errorf(api.CodeNotEnrolled, "no MFA credential is enrolled").
				WithHint("enroll one with: stepupctl enroll totp")
		}
		family = api.MFAMethods
	case routeReauth:
		if mfa && !a.policy().AllowReauthWithMfa {
			return nil, api.Errorf(api.CodeForbidden, "re-authentication cannot mint tokens while an MFA credential is enrolled").
				WithHint("use promptMfa / stepupctl prompt --mfa, or set allowReauthWithMfa: true in the policy")
		}
		family = api.ReauthMethods
	default:
		family = autoFamily(mfa)
	}
	out := a.usableOf(family, scopes)
	if len(out) == 0 {
		if a.creds.count() == 0 {
			return out, api.Errorf(api.CodeNotEnrolled, "no verification method is enrolled").
				WithHint("enroll an authenticator app with: stepupctl enroll totp")
		}
		return out, api.Errorf(api.CodeNotEnrolled, "none of the enrolled methods may be used for these scopes").
			WithHint("the policy's methods list for the scope names the allowed ones; enroll one of them")
	}
	return out, nil
}

// availableFor is available(routeAuto, [scope]) without the error, for
// isStepUpRequired, which lists what is usable (none is an answer, not
// an error) on every call.
func (a *Agent) availableFor(scope string) []string {
	scopes := [1]string{scope}
	return a.usableOf(autoFamily(a.creds.hasMFA()), scopes[:])
}

// autoFamily is the route of promptStepUpAuth: MFA when enrolled, else
// re-authentication.
func autoFamily(mfa bool) []string {
	if mfa {
		return api.MFAMethods
	}
	return api.ReauthMethods
}

// usableOf lists the methods of family usable now that every scope allows.
func (a *Agent) usableOf(family, scopes []string) []string {
	out := []string{}
	for _, m := range family {
		if !a.usable(m) {
			continue
		}
		ok := true
		for _, s := range scopes {
			ok = ok && a.rule(s).AllowsMethod(m)
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// The caps on the scopes of one request, so that every prompt shows every
// scope: pinentry's Assuan lines hold 1000 bytes, and a description cut
// short would hide the scopes at its end (docs/protocol.md, "Scopes").
const (
	maxRequestScopes = 8
	maxScopesBytes   = 256 // the names joined with ", ", as the prompt shows them
)

// checkScopeName refuses a scope name that is not one (field names the
// param in the error).
func checkScopeName(field, s string) error {
	if err := policy.CheckScope(s); err != nil {
		return invalidParams("invalid scope in %s: %v", field, err)
	}
	return nil
}

// checkScopes resolves scopes for a verification: too many or too long
// scope lists, unknown denied scopes and clients not allowed are refused.
func (a *Agent) checkScopes(ctx context.Context, scopes []string) error {
	if len(scopes) == 0 {
		return invalidParams("requestedScopes is required, e.g. [\"wallet:export\"]")
	}
	if len(scopes) > maxRequestScopes {
		return invalidParams("requestedScopes names %d scopes; at most %d may be asked for at once, so that the prompt shows every one", len(scopes), maxRequestScopes).
			WithHint("ask for fewer scopes per step-up")
	}
	size := 0
	for _, s := range scopes {
		if err := checkScopeName("requestedScopes", s); err != nil {
			return err
		}
		if size > 0 {
			size += len(", ")
		}
		// A '%' takes three bytes on pinentry's line (%25).
		size += len(s) + 2*strings.Count(s, "%")
	}
	if size > maxScopesBytes {
		return invalidParams("requestedScopes is %d bytes long; at most %d bytes of scope names may be asked for at once, so that the prompt shows every one (a %% counts as 3)", size, maxScopesBytes).
			WithHint("use shorter scope names, or ask for fewer scopes per step-up")
	}
	for _, s := range scopes {
		r := a.rule(s)
		if r.Denied {
			return api.Errorf(api.CodeUnknownScope, "the policy does not name scope %s and denies unknown scopes", s).
				WithHint("add the scope to the policy's scopes, or set unknownScopes: require")
		}
		if err := a.checkClient(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// maxTimeoutSeconds caps a request's timeoutSeconds as the policy's
// prompt.timeout is capped (10 minutes).
const maxTimeoutSeconds = 600

func checkTimeout(secs int) error {
	if secs < 0 || secs > maxTimeoutSeconds {
		return invalidParams("timeoutSeconds must be between 1 and %d (10 minutes), not %d", maxTimeoutSeconds, secs).
			WithHint("leave it out to use the policy's prompt.timeout")
	}
	return nil
}

// beginFor is begin for a prompt request: the challenge carries the
// request's binding (its caller, details and key), which the token minted
// from it enforces. Every prompt path starts its verifications here, so no
// verification it starts (a combined factor, a single-shot method's next
// challenge) mints an unbound token.
func (a *Agent) beginFor(ctx context.Context, rt route, m string, p *api.PromptParams, unlock bool) (*challenge, error) {
	c, _, err := a.begin(ctx, rt, m, p.RequestedScopes, unlock, false)
	if err != nil {
		return nil, err
	}
	details, _ := api.ParseDetails(p.AuthorizationDetails) // checked by Prompt
	c.bind = bindingOf(ctx, details, p.Cnf)
	return c, nil
}

// begin starts a verification with method m (or the default of rt) for
// scopes; customUI is set for startVerification, whose client shows the
// ask and collects the answer itself. Callers must not hold a.mu.
func (a *Agent) begin(ctx context.Context, rt route, m string, scopes []string, unlock, customUI bool) (*challenge, any, error) {
	if !unlock {
		if err := a.checkScopes(ctx, scopes); err != nil {
			return nil, nil, err
		}
	}
	if a.Locked() && !unlock {
		a.audit(ctx, audit.Record{Event: audit.EventRefused, Method: m, Scopes: scopes, Result: "locked"})
		return nil, nil, lockedError()
	}
	avail, err := a.available(rt, scopes)
	if err != nil {
		return nil, nil, err
	}
	if m == "" {
		m = avail[0]
	} else if !contains(avail, m) {
		if !api.KnownMethod(m) {
			return nil, nil, invalidParams("unknown method %q; methods are totp, passkey, recovery_code, fingerprint, password, email_otp, sms_otp, wallet", m)
		}
		if a.methods.get(m) == nil {
			return nil, nil, api.Errorf(api.CodeNotEnrolled, "method %s is not available in this agent", m)
		}
		return nil, nil, api.Errorf(api.CodeForbidden, "method %s may not be used here; usable now: %v", m, avail).
			WithHint("the route (MFA or re-authentication), the policy's methods for the scope, and the enrolled credentials decide")
	}
	if err := a.limits.check(m); err != nil {
		a.audit(ctx, audit.Record{Event: audit.EventRefused, Method: m, Scopes: scopes, Result: "rate_limited", Detail: "locked out"})
		return nil, nil, err
	}
	scopes = normScopes(scopes)
	state, ch, err := a.methods.get(m).Start(ctx, method.StartRequest{Creds: a.creds.of(m), Scopes: scopes, CustomUI: customUI})
	if err != nil {
		return nil, nil, err
	}
	c := &challenge{method: m, scopes: scopes, state: state, unlock: unlock}
	if p := peerUID(ctx); p >= 0 {
		c.uid = p
	}
	return c, ch, nil
}

// finish checks response for c. On success it mints the token (or
// unlocks). A wrong answer counts against the method's limit.
func (a *Agent) finish(ctx context.Context, c *challenge, response json.RawMessage) (*api.TokenResult, error) {
	impl := a.methods.get(c.method)
	defer a.methods.lock(c.method)()

	a.mu.Lock()
	done, locked := c.done, a.locked.Load()
	a.mu.Unlock()
	if done {
		// Two completeVerification calls raced past the lookup; the
		// other one was answered first.
		return nil, api.Errorf(api.CodeVerificationFailed, "unknown or expired challengeId").
			WithHint("start again with startVerification")
	}
	if err := a.limits.check(c.method); err != nil {
		return nil, err
	}
	if locked && !c.unlock {
		return nil, lockedError()
	}

	// The attempt counts before the method checks it, and is refunded if
	// the answer is right: a client that hangs up before a slow check
	// (PAM's delay after a wrong password) answers has used a try.
	left, retry, at := a.limits.attempt(c.method)
	cred, err := impl.Complete(ctx, c.state, a.creds.of(c.method), response)
	if err != nil {
		if !errors.Is(err, method.ErrVerificationFailed) {
			if ctx.Err() == nil {
				// The method could not check (a helper that cannot
				// run): no answer was judged, so no try was used.
				a.limits.refund(c.method, at)
			} else if left == 0 {
				a.audit(ctx, audit.Record{Event: audit.EventLockout, Method: c.method, RetryAfter: retry, Result: "rate_limited", Detail: "abandoned check"})
			}
			return nil, err
		}
		a.audit(ctx, audit.Record{Event: "verification", Method: c.method, Scopes: c.scopes, Result: "verification_failed"})
		e := api.Errorf(api.CodeVerificationFailed, "%s verification failed: %s", c.method, failureOf(c.method, err))
		if left == 0 {
			e.Message += "; too many failures, the method is locked out"
			e.Data.RetryAfterSeconds = retry
			e = e.WithHint("%s", a.limits.lockoutHint(c.method))
			a.audit(ctx, audit.Record{Event: audit.EventLockout, Method: c.method, RetryAfter: retry, Result: "rate_limited"})
		} else if left <= 2 {
			e.Message += "; " + pluralTries(left) + " left before a lockout"
		}
		e.Data.Method = c.method
		return nil, e
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limits.success(c.method)
	c.done = true
	if cred != nil && cred.ID != "" {
		a.creds.update(cred)
	}
	a.audit(ctx, audit.Record{Event: "verification", Method: c.method, Scopes: c.scopes, Result: "ok"})
	if c.unlock {
		a.unlockAll()
		a.audit(ctx, audit.Record{Event: "unlock", Method: c.method, Result: "ok"})
		return nil, nil
	}
	if a.locked.Load() {
		return nil, lockedError()
	}
	return a.mint(ctx, c.scopes, c.method, impl.AMR(), c.bind)
}

// failureOf says why method m refused an answer: failureText, unless
// the method said more (a TOTP code already used).
func failureOf(m string, err error) string {
	if errors.Is(err, method.ErrCodeUsed) {
		return "this code was already used (a code counts once, the one you enrolled with too); wait for the next code from your authenticator app"
	}
	return failureText(m)
}

func failureText(m string) string {
	switch m {
	case api.TOTP, api.EmailOTP, api.SMSOTP, api.RecoveryCode:
		return "wrong, expired or already used code"
	case api.Password:
		return "wrong password"
	case api.Wallet:
		return "the signature does not match the enrolled address and message"
	case api.Passkey:
		return "the passkey assertion did not verify"
	}
	return "wrong answer"
}

func pluralTries(n int) string {
	if n == 1 {
		return "1 try"
	}
	return itoa(n) + " tries"
}

func lockedError() *api.Error {
	return api.Errorf(api.CodeLocked, "the agent is locked (screen lock, sleep or stepupctl lock)").
		WithHint("unlock it with: stepupctl unlock")
}

// StartVerification answers startVerification (the custom-UI path).
func (a *Agent) StartVerification(ctx context.Context, p *api.StartVerificationParams) (*api.Challenge, error) {
	if p.Method == "" {
		return nil, invalidParams("method is required, e.g. \"totp\"")
	}
	unlock := p.Purpose == "unlock"
	if p.Purpose != "" && !unlock {
		return nil, invalidParams("purpose must be \"unlock\" or absent")
	}
	// Hold a place under the caps first: past them no ceremony starts
	// (no passkey page, no email).
	o, err := a.challenges.reserve(ownerOf(ctx), unlock, a.now())
	if err != nil {
		return nil, err
	}
	filled := false
	defer func() {
		if !filled {
			a.challenges.release(o)
		}
	}()
	c, ch, err := a.begin(ctx, routeAuto, p.Method, p.RequestedScopes, unlock, true)
	if err != nil && !unlock {
		var ae *api.Error
		// The custom-UI path may name any usable method of either
		// route, within the routing rules.
		if errors.As(err, &ae) && ae.Code == api.CodeForbidden && api.IsReauth(p.Method) {
			c, ch, err = a.begin(ctx, routeReauth, p.Method, p.RequestedScopes, unlock, true)
		} else if errors.As(err, &ae) && ae.Code == api.CodeForbidden && api.IsMFA(p.Method) {
			c, ch, err = a.begin(ctx, routeMFA, p.Method, p.RequestedScopes, unlock, true)
		}
	}
	if err != nil {
		return nil, err
	}
	if !unlock {
		details, err := a.checkAction(p.RequestedScopes, p.ActionParams)
		if err != nil {
			return nil, err
		}
		c.bind = bindingOf(ctx, details, p.Cnf)
	}
	raw, err := json.Marshal(ch)
	if err != nil {
		return nil, err
	}
	a.challenges.fill(o, c)
	filled = true
	return &api.Challenge{ChallengeID: o.ID, Method: c.method, ExpiresAt: o.Expires.UTC(), Challenge: raw,
		Ask: a.methods.get(c.method).Ask(c.state)}, nil
}

// CompleteVerification answers completeVerification.
func (a *Agent) CompleteVerification(ctx context.Context, p *api.CompleteVerificationParams) (any, error) {
	o := a.challenges.get(p.ChallengeID, a.now())
	if o == nil {
		return nil, api.Errorf(api.CodeVerificationFailed, "unknown or expired challengeId").
			WithHint("start again with startVerification")
	}
	c := o.Val
	if uid := peerUID(ctx); uid >= 0 && uid != c.uid {
		return nil, api.Errorf(api.CodeForbidden, "this challenge belongs to another client")
	}
	if len(p.Response) == 0 {
		p.Response = json.RawMessage("{}")
	}
	if w, ok := a.methods.get(c.method).(method.Waiter); ok && isEmptyObject(p.Response) {
		// Done in the agent's own page: wait for it there, outside the
		// method's lock, then check what it posted.
		resp, err := w.Wait(ctx, c.state)
		if err != nil {
			return nil, err
		}
		p.Response = resp
	}
	res, err := a.finish(ctx, c, p.Response)
	if err == nil || errors.Is(err, api.ErrRateLimited) {
		a.challenges.take(o)
	}
	if err != nil {
		return nil, err
	}
	if c.unlock {
		return api.LockResult{Locked: false}, nil
	}
	return res, nil
}

// isEmptyObject reports whether raw is {} or an object of nulls
// ({"credential": null}): nothing answered by the client itself.
func isEmptyObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	for _, v := range m {
		if string(v) != "null" {
			return false
		}
	}
	return true
}
