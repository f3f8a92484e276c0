package agent

import (
	"context"

	"github.com/stepup-agent/stepup-agent/audit"
	"go.uber.org/zap"
)

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
	n := a.tokens.revoke(anyCaller, nil)
	*src = true
	a.locked.Store(true)
	a.challenges.removeIf(func(c *challenge) bool { return !c.unlock })
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
	a.locked.Store(a.manualLock)
	still := a.manualLock
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
	was := a.locked.Load()
	a.unlockAll()
	a.mu.Unlock()
	if was {
		a.audit(ctx, audit.Record{Event: "unlock", Detail: reason, Result: "ok"})
		a.log.Info("unlocked", zap.String("reason", reason))
	}
}

// unlockAll clears every lock. Callers hold a.mu.
func (a *Agent) unlockAll() {
	a.manualLock, a.sessionLock = false, false
	a.locked.Store(false)
}

// Locked reports whether the agent is locked.
func (a *Agent) Locked() bool { return a.locked.Load() }
