package main

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/stepup-agent/stepup-agent/agent"
	"github.com/stepup-agent/stepup-agent/lockwatch"
	"github.com/stepup-agent/stepup-agent/service"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The agent as a service of systemd or launchd (docs/systemd.md,
// docs/launchd.md): the journal logger, the inherited socket, readiness
// and watchdog notifications, and the logind watcher that locks the agent
// on sleep and screen lock.

// journalLogger returns a logger that writes to journald when systemd
// started the agent with stderr on the journal.
func journalLogger(debug bool) (*zap.Logger, bool) {
	level := zapcore.InfoLevel
	if debug {
		level = zapcore.DebugLevel
	}
	log, err := service.NewLogger(level)
	if err != nil {
		return nil, false
	}
	if _, ok := log.Core().(*service.JournalCore); !ok {
		return nil, false
	}
	return log, true
}

// socketPath is the file-system path of a Unix listener.
func socketPath(ln net.Listener) string {
	if a, ok := ln.Addr().(*net.UnixAddr); ok {
		return a.Name
	}
	return ""
}

// serviceStatus is the one-line STATUS= summary: tokens held, keychain
// backend, locked or not. No scopes, no token values: anyone on the
// machine can read it with systemctl status. It reads counts only: the
// full status describes every token, and the watchdog asks for this line
// every few seconds.
func serviceStatus(a *agent.Agent) string {
	n, backend := a.TokenCount(), a.Backend()
	s := fmt.Sprintf("%d tokens held, keychain %s", n, backend)
	if n == 1 {
		s = fmt.Sprintf("1 token held, keychain %s", backend)
	}
	if a.Locked() {
		s += ", locked"
	}
	return s
}

// watchdogCheck is the health check before each WATCHDOG=1: the agent
// answers a status query (it takes the agent's lock) in time, and the
// status line is refreshed with the answer. A wedged agent misses its
// pings and systemd restarts it.
func watchdogCheck(a *agent.Agent, n *service.Notifier) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		done := make(chan string, 1)
		go func() { done <- serviceStatus(a) }()
		select {
		case s := <-done:
			n.Status(s)
			return nil
		case <-ctx.Done():
			return fmt.Errorf("the agent did not answer a status query in time: %w", ctx.Err())
		}
	}
}

// lockHandler turns logind's events into the agent's lock and unlock.
type lockHandler struct {
	ctx context.Context
	a   *agent.Agent
	n   *service.Notifier
}

func (h lockHandler) Lock(reason string) {
	h.a.LockSession(h.ctx, "logind: "+reason)
	h.n.Status(serviceStatus(h.a))
}

func (h lockHandler) Unlock(reason string) {
	h.a.UnlockSession(h.ctx, "logind: "+reason)
	h.n.Status(serviceStatus(h.a))
}

// lockWatcher runs lockwatch.Run while the policy's lockOnSleep is on,
// and stops it when a reload turns it off. set is called from the policy
// reload (under the policy state's lock), so it never waits for the
// watcher: the watcher's handler reads the status, which takes that lock.
type lockWatcher struct {
	ctx    context.Context
	log    *zap.Logger
	h      lockwatch.Handler
	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (lw *lockWatcher) set(on bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if on == (lw.cancel != nil) {
		return
	}
	if !on {
		lw.log.Info("lockOnSleep is off: not following sleep and screen lock")
		lw.cancel()
		lw.cancel = nil
		return
	}
	ctx, cancel := context.WithCancel(lw.ctx)
	lw.cancel = cancel
	lw.wg.Add(1)
	go func() {
		defer lw.wg.Done()
		if err := lockwatch.Run(ctx, lw.log, lw.h); err != nil {
			lw.log.Warn("not following sleep and screen lock; stepupctl lock still works", zap.Error(err))
		}
	}()
}

// stop ends the watcher and waits for it (shutdown).
func (lw *lockWatcher) stop() {
	lw.mu.Lock()
	if lw.cancel != nil {
		lw.cancel()
		lw.cancel = nil
	}
	lw.mu.Unlock()
	lw.wg.Wait()
}
