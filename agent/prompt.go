package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/prompt"
	"go.uber.org/zap"
)

// Prompt answers promptStepUpAuth, promptMfa and promptReauthenticate:
// it verifies the user through a native prompt and returns the token.
// Concurrent requests for the same scopes share one prompt.
func (a *Agent) Prompt(ctx context.Context, rt route, p *api.PromptParams) (*api.TokenResult, error) {
	if err := checkTimeout(p.TimeoutSeconds); err != nil {
		return nil, err
	}
	warnings, err := api.CheckCreateMfaToken(p.CreateMfaToken, p.RequestedScopes)
	if err != nil {
		return nil, err
	}
	if err := a.checkScopes(ctx, p.RequestedScopes); err != nil {
		return nil, err
	}
	details, err := a.checkAction(p.RequestedScopes, p.ActionParams)
	if err != nil {
		return nil, err
	}
	if a.Locked() {
		a.audit(ctx, audit.Record{Event: audit.EventRefused, Method: p.Method, Scopes: p.RequestedScopes, Result: "locked"})
		return nil, lockedError()
	}
	if _, err := a.available(rt, p.RequestedScopes); err != nil {
		return nil, err
	}
	if err := a.limits.checkCancels(clientKey(ctx)); err != nil {
		a.audit(ctx, audit.Record{Event: audit.EventRefused, Method: p.Method, Scopes: p.RequestedScopes, Result: "rate_limited", Detail: "cooldown after cancelled prompts"})
		return nil, err
	}
	if _, err := a.cfg.Prompts().Select(p.Env()); err != nil {
		a.audit(ctx, audit.Record{Event: audit.EventRefused, Method: p.Method, Scopes: p.RequestedScopes, Result: resultOf(wireError(err))})
		return nil, err // no prompt can reach this client: say so at once
	}
	scopes := normScopes(p.RequestedScopes)
	jkt := ""
	if p.Cnf != nil {
		jkt = p.Cnf.JKT
	}
	key := fmt.Sprintf("%d|%s|%s|%s|%s|%s", rt, p.Method, strings.Join(scopes, " "), jkt, details.Canonical(), remoteKey(ctx)) // remote.go: never shared across connections
	res, err := a.flights.do(ctx, key, a.modesOf(scopes), func(ctx context.Context) (*api.TokenResult, error) {
		return a.promptOnce(ctx, rt, p, false)
	})
	if err != nil && ctx.Err() == nil && errors.Is(wireError(err), api.ErrCancelled) {
		a.limits.noteCancel(clientKey(ctx))
	}
	if err == nil && res != nil && len(warnings) > 0 {
		r := *res
		r.Warnings = warnings
		res = &r
	}
	return res, err
}

// UnlockPrompt answers unlock: it verifies the user and lifts the lock.
// With no credential enrolled there is nothing to verify with, and
// nothing a lock protects, so it unlocks at once.
func (a *Agent) UnlockPrompt(ctx context.Context, p *api.PromptParams) (*api.LockResult, error) {
	if err := checkTimeout(p.TimeoutSeconds); err != nil {
		return nil, err
	}
	if !a.Locked() {
		return &api.LockResult{Locked: false}, nil
	}
	avail, _ := a.available(routeAuto, nil)
	if len(avail) == 0 {
		a.Unlock(ctx, "no credential enrolled")
		return &api.LockResult{Locked: false}, nil
	}
	if _, err := a.promptOnce(ctx, routeAuto, p, true); err != nil {
		return nil, err
	}
	return &api.LockResult{Locked: false}, nil
}

func clientKey(ctx context.Context) string {
	if k := remoteKey(ctx); k != "" {
		return k // remote.go: one cooldown per SSH connection
	}
	if exe := clientExe(ctx); exe != "" {
		return exe
	}
	return "uid:" + itoa(peerUID(ctx))
}

// promptOnce runs one prompt session: one dialog at a time, retries after
// wrong answers within the failure limit, until answered, cancelled or
// timed out.
func (a *Agent) promptOnce(ctx context.Context, rt route, p *api.PromptParams, unlock bool) (*api.TokenResult, error) {
	pol := a.policy()
	timeout := pol.Prompt.Timeout.D()
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	deadline := a.now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	sel := a.cfg.Prompts()
	pr, err := sel.Select(p.Env())
	if err != nil {
		return nil, err
	}

	// One dialog at a time: wait for the one on screen.
	select {
	case a.promptCh <- struct{}{}:
		defer func() { <-a.promptCh }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	// Several factors at once, or the preferred one (agent/combined.go).
	f := a.promptFactors(rt, p, unlock)
	if f != nil && f.combined() {
		res, err := a.promptCombined(ctx, pr, deadline, rt, p, unlock, f)
		var nc *notCombined
		if !errors.As(err, &nc) {
			return res, err
		}
		f = f.withoutTyped()
	}
	c, err := a.beginPreferred(ctx, rt, p, unlock, f)
	if err != nil {
		return nil, err
	}
	impl := a.methods.get(c.method)
	ask := impl.Ask(c.state)
	desc, err := a.describe(ctx, c, p, ask)
	if err != nil {
		return nil, err
	}
	lastErr := ""
	for {
		req := promptRequest(p, desc, ask.Label, lastErr, deadline)
		var response json.RawMessage
		if ask.Field == "" {
			response, err = a.waitElsewhere(ctx, pr, impl, c, req)
		} else {
			var answer string
			answer, err = pr.GetPIN(ctx, req)
			if err == nil {
				response, _ = json.Marshal(map[string]string{ask.Field: answer})
			}
		}
		if err != nil {
			return nil, a.promptEnded(ctx, err, c.method, c.scopes)
		}
		res, err := a.finish(ctx, c, response)
		if err == nil {
			if unlock {
				return nil, nil
			}
			return res, nil
		}
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeVerificationFailed || ae.Data.RetryAfterSeconds > 0 || ask.Field == "" {
			// A ceremony done elsewhere (a passkey page) is used up by
			// its first answer: the client asks again for a new one.
			return nil, err
		}
		lastErr = ae.Message
		a.log.Info("wrong answer in prompt; asking again", zap.String("method", c.method))
		if ss, ok := impl.(method.SingleShot); ok && ss.SingleShot() {
			// The answer used the challenge up: ask about a new one.
			if c, err = a.beginFor(ctx, rt, c.method, p, unlock); err != nil {
				return nil, err
			}
			ask = impl.Ask(c.state)
			if desc, err = a.describe(ctx, c, p, ask); err != nil {
				return nil, err
			}
		}
	}
}

// promptRequest is the dialog for one question of a prompt request p,
// with the time left until deadline.
func promptRequest(p *api.PromptParams, desc, label, lastErr string, deadline time.Time) prompt.Request {
	return prompt.Request{
		Title:       "stepup-agent",
		Description: desc,
		Prompt:      label,
		Error:       lastErr,
		Timeout:     time.Until(deadline).Round(time.Second),
		Env:         p.Env(),
	}
}

// promptEnded audits a prompt that ended without an answer (cancelled,
// timed out, the client gone) and returns its error, a timeout of the
// request's own deadline as prompt.ErrTimeout.
func (a *Agent) promptEnded(ctx context.Context, err error, method string, scopes []string) error {
	if ctx.Err() == context.DeadlineExceeded {
		err = prompt.ErrTimeout
	}
	a.audit(ctx, audit.Record{Event: "prompt", Method: method, Scopes: scopes, Result: resultOf(wireError(err))})
	return err
}

// waitElsewhere shows a Cancel-only prompt while the method's answer
// arrives elsewhere (a passkey ceremony in the browser).
func (a *Agent) waitElsewhere(ctx context.Context, pr prompt.Prompter, impl method.Method, c *challenge, req prompt.Request) (json.RawMessage, error) {
	w, ok := impl.(method.Waiter)
	if !ok {
		return nil, fmt.Errorf("method %s has nothing to ask and cannot wait", c.method)
	}
	wctx, cancel := context.WithCancel(method.WithPromptEnv(ctx, req.Env))
	defer cancel()
	// What the method reports meanwhile ("touch the reader again") is
	// shown by showing the prompt again with it as the error line.
	notes := newNotices()
	stopWatch := watchProgress(wctx, impl, c.state, notes.post)
	defer stopWatch()
	var wg sync.WaitGroup
	promptErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		req.OK = "Cancel"
		req.Cancel = "Cancel"
		for {
			note, err := notes.during(wctx, func(ctx context.Context) error { return pr.Confirm(ctx, req) })
			if note != "" && wctx.Err() == nil {
				req.Error = note
				continue
			}
			if err == nil {
				err = prompt.ErrCancelled
			}
			promptErr <- err
			return
		}
	}()
	type result struct {
		resp json.RawMessage
		err  error
	}
	got := make(chan result, 1)
	go func() {
		r, err := w.Wait(wctx, c.state)
		got <- result{r, err}
	}()
	select {
	case r := <-got:
		cancel()
		wg.Wait()
		return r.resp, r.err
	case err := <-promptErr:
		if wctx.Err() == nil {
			cancel()
			return nil, err
		}
		r := <-got
		return r.resp, r.err
	}
}

// describe is the prompt's text: who asks, for what, what the token
// will allow (the "Approve:" lines of the details), why, how. Text that
// pinentry could not show whole (its 1000-byte line) is refused with
// -32602: nothing the user approves is ever cut.
func (a *Agent) describe(ctx context.Context, c *challenge, p *api.PromptParams, ask method.Ask) (string, error) {
	var b strings.Builder
	what := "step up for " + strings.Join(c.scopes, ", ")
	if c.unlock {
		what = "unlock the agent"
	}
	fmt.Fprintf(&b, "%s asks to %s.\n", a.requester(ctx, p), what)
	if lines := c.bind.details.Lines(); len(lines) > 0 && !c.unlock {
		b.WriteString("Approve:\n")
		for _, l := range lines {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	if p.Reason != "" {
		fmt.Fprintf(&b, "Reason: %s\n", sanitize(p.Reason))
	}
	fmt.Fprintf(&b, "Method: %s", c.method)
	if ask.Hint != "" {
		fmt.Fprintf(&b, "\n%s", ask.Hint)
	}
	if ask.Text != "" {
		fmt.Fprintf(&b, "\n%s", ask.Text)
	}
	desc := b.String()
	if n := prompt.DescriptionLen(desc); n > prompt.MaxDescription && c.bind.details != nil {
		return "", invalidParams("the prompt for these scopes and authorizationDetails is %d bytes, over the %d bytes pinentry can show in one prompt; nothing is cut, so the request is refused", n, prompt.MaxDescription).
			WithHint("send fewer or shorter authorizationDetails entries (or fewer scopes) in one step-up")
	}
	return desc, nil
}

// sanitize keeps a client's text printable and short in a prompt.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 200 {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = ' '
		}
		b.WriteRune(r)
	}
	return b.String()
}
