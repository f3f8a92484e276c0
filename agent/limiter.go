package agent

import (
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/policy"
)

// limit counts one method's failures (docs/policy.md, "limits"): after
// maxFailures within window the method is locked out until window has
// passed since the last failure. Kept in the keychain across restarts.
type limit struct {
	Failures    []time.Time `json:"failures"`
	LockedUntil time.Time   `json:"lockedUntil"`
}

// cancelWindow and maxCancels guard against prompt-bombing: a client whose
// prompts the user cancelled maxCancels times within cancelWindow is
// cooled down until the window has passed.
const (
	cancelWindow = time.Minute
	maxCancels   = 3
)

// limiter owns the failure counts of each method (persisted) and the
// cancel cool-down of each client (in memory).
type limiter struct {
	now     func() time.Time
	policy  func() *policy.Policy
	persist *persister

	mu      sync.Mutex
	limits  map[string]*limit
	cancels map[string][]time.Time

	// lockoutEnded, when set, hears of a lockout that has run out (for
	// the audit log); called without l.mu.
	lockoutEnded func(m string, until time.Time)
	// hasRecovery, when set, reports whether recovery codes are
	// enrolled and left, so that a lockout names them as the way out.
	// Called under l.mu: it must not call back into the limiter.
	hasRecovery func() bool
}

// lockoutHint says what to do while m is locked out.
func (l *limiter) lockoutHint(m string) string {
	if m != api.RecoveryCode && l.hasRecovery != nil && l.hasRecovery() {
		return "wait, or use one of your recovery codes: stepupctl prompt --method recovery_code SCOPE"
	}
	return "wait, or use another method (stepupctl prompt --method ...)"
}

func newLimiter(now func() time.Time, pol func() *policy.Policy, p *persister) *limiter {
	return &limiter{now: now, policy: pol, persist: p, limits: map[string]*limit{}, cancels: map[string][]time.Time{}}
}

// load sets m's counts as read from the keychain.
func (l *limiter) load(m string, lim *limit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limits[m] = lim
}

// check returns a rate_limited error while m is locked out.
func (l *limiter) check(m string) error {
	l.mu.Lock()
	var ended time.Time
	if lim := l.limits[m]; lim != nil && !lim.LockedUntil.IsZero() && !l.now().Before(lim.LockedUntil) {
		ended, lim.LockedUntil = lim.LockedUntil, time.Time{}
		l.persist.put(keychain.KindLimit, m, lim)
	}
	e := l.checkLocked(m)
	l.mu.Unlock()
	if !ended.IsZero() && l.lockoutEnded != nil {
		l.lockoutEnded(m, ended)
	}
	if e != nil {
		return e
	}
	return nil
}

func (l *limiter) checkLocked(m string) *api.Error {
	lim := l.limits[m]
	if lim == nil {
		return nil
	}
	now := l.now()
	if now.Before(lim.LockedUntil) {
		secs := int(lim.LockedUntil.Sub(now).Seconds() + 0.999)
		e := api.Errorf(api.CodeRateLimited, "too many failed %s attempts; try again in %ds", m, secs).
			WithHint("%s", l.lockoutHint(m))
		e.Data.RetryAfterSeconds = secs
		e.Data.Method = m
		return e
	}
	return nil
}

// failure records a failure of m and returns how many tries are left
// before the lockout (0: now locked out) and, when locked out, the
// seconds until the method may be tried again.
func (l *limiter) failure(m string) (left, retryAfter int) {
	left, retryAfter, _ = l.attempt(m)
	return left, retryAfter
}

// attempt counts one try of m before its answer is checked, as a
// failure: a check that is abandoned (the client hung up) has used the
// try. It returns what failure returns and the attempt's time, which
// refund takes; success after a right answer clears the count.
func (l *limiter) attempt(m string) (left, retryAfter int, at time.Time) {
	pol := l.policy()
	now := l.now()
	window := pol.Limits.Window.D()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.limits[m]
	if lim == nil {
		lim = &limit{}
		l.limits[m] = lim
	}
	kept := lim.Failures[:0]
	for _, t := range lim.Failures {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	lim.Failures = append(kept, now)
	left = pol.Limits.MaxFailures - len(lim.Failures)
	if left <= 0 {
		// The failures stay: they are all older than the lockout's end
		// by a window, so they no longer count when it ends, and a
		// refund of this attempt can lift the lockout it set.
		lim.LockedUntil = now.Add(window)
		left = 0
	}
	l.persist.put(keychain.KindLimit, m, lim)
	if e := l.checkLocked(m); e != nil {
		retryAfter = e.Data.RetryAfterSeconds
	}
	return left, retryAfter, now
}

// refund takes back the attempt at (from attempt) when no answer was
// judged: the method could not check it. A lockout that attempt set is
// lifted.
func (l *limiter) refund(m string, at time.Time) {
	window := l.policy().Limits.Window.D()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.limits[m]
	if lim == nil {
		return
	}
	for i := len(lim.Failures) - 1; i >= 0; i-- {
		if lim.Failures[i].Equal(at) {
			lim.Failures = append(lim.Failures[:i], lim.Failures[i+1:]...)
			if lim.LockedUntil.Equal(at.Add(window)) {
				lim.LockedUntil = time.Time{}
			}
			break
		}
	}
	if len(lim.Failures) == 0 && lim.LockedUntil.IsZero() {
		delete(l.limits, m)
		l.persist.del(keychain.KindLimit, m)
		return
	}
	l.persist.put(keychain.KindLimit, m, lim)
}

// success clears m's failures.
func (l *limiter) success(m string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim := l.limits[m]; lim != nil && (len(lim.Failures) > 0 || !lim.LockedUntil.IsZero()) {
		delete(l.limits, m)
		l.persist.del(keychain.KindLimit, m)
	}
}

// checkCancels refuses prompts for a client that keeps being cancelled.
func (l *limiter) checkCancels(client string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.cancels[client]
	now := l.now()
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

// noteCancel records that the user dismissed a prompt of client.
func (l *limiter) noteCancel(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	ts := l.cancels[client]
	kept := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < cancelWindow {
			kept = append(kept, t)
		}
	}
	l.cancels[client] = append(kept, now)
}

// sweep forgets the cancels that no longer count.
func (l *limiter) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, ts := range l.cancels {
		if len(ts) == 0 || now.Sub(ts[len(ts)-1]) > cancelWindow {
			delete(l.cancels, k)
		}
	}
}
