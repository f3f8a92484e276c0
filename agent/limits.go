package agent

import (
	"context"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/keychain"
)

// limit counts one method's failures (docs/policy.md, "limits"): after
// maxFailures within window the method is locked out until window has
// passed since the last failure. Kept in the keychain across restarts.
type limit struct {
	Failures    []time.Time `json:"failures"`
	LockedUntil time.Time   `json:"lockedUntil"`
}

// checkLimit returns a rate_limited error while m is locked out. Callers
// hold a.mu.
func (a *Agent) checkLimit(m string) error {
	l := a.limits[m]
	if l == nil {
		return nil
	}
	now := a.now()
	if !l.LockedUntil.IsZero() && !now.Before(l.LockedUntil) {
		a.audit(context.Background(), audit.Record{Event: audit.EventLockoutEnd, Method: m, Result: "ok", Detail: "locked out until " + l.LockedUntil.UTC().Format(time.RFC3339)})
		l.LockedUntil = time.Time{}
		a.persist.put(keychain.KindLimit, m, l)
	}
	if now.Before(l.LockedUntil) {
		secs := int(l.LockedUntil.Sub(now).Seconds() + 0.999)
		e := api.Errorf(api.CodeRateLimited, "too many failed %s attempts; try again in %ds", m, secs).
			WithHint("wait, or use another method (stepupctl prompt --method ...)")
		e.Data.RetryAfterSeconds = secs
		e.Data.Method = m
		return e
	}
	return nil
}

// failure records a failure of m and returns how many tries are left
// before the lockout (0: now locked out). Callers hold a.mu.
func (a *Agent) failure(m string) int {
	pol := a.policy()
	now := a.now()
	window := pol.Limits.Window.D()
	l := a.limits[m]
	if l == nil {
		l = &limit{}
		a.limits[m] = l
	}
	kept := l.Failures[:0]
	for _, t := range l.Failures {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	l.Failures = append(kept, now)
	left := pol.Limits.MaxFailures - len(l.Failures)
	if left <= 0 {
		l.LockedUntil = now.Add(window)
		l.Failures = nil
		left = 0
	}
	a.persist.put(keychain.KindLimit, m, l)
	return left
}

// success clears m's failures. Callers hold a.mu.
func (a *Agent) success(m string) {
	if l := a.limits[m]; l != nil && (len(l.Failures) > 0 || !l.LockedUntil.IsZero()) {
		delete(a.limits, m)
		a.persist.del(keychain.KindLimit, m)
	}
}

// cancelWindow and maxCancels guard against prompt-bombing: a client whose
// prompts the user cancelled maxCancels times within cancelWindow is
// cooled down until the window has passed.
const (
	cancelWindow = time.Minute
	maxCancels   = 3
)

// checkCancels refuses prompts for a client that keeps being cancelled.
// Callers hold a.mu.
func (a *Agent) checkCancels(client string) error {
	ts := a.cancels[client]
	now := a.now()
	n := 0
	for _, t := range ts {
		if now.Sub(t) < cancelWindow {
			n++
		}
	}
	if n >= maxCancels {
		wait := int(cancelWindow.Seconds() - now.Sub(ts[len(ts)-1]).Seconds() + 0.999)
		e := api.Errorf(api.CodeRateLimited, "the user dismissed this client's last %d prompts; it may ask again in %ds", n, wait).
			WithHint("stop asking for step-up in a loop after a cancel")
		e.Data.RetryAfterSeconds = wait
		return e
	}
	return nil
}

func (a *Agent) noteCancel(client string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	ts := a.cancels[client]
	kept := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < cancelWindow {
			kept = append(kept, t)
		}
	}
	a.cancels[client] = append(kept, now)
}
