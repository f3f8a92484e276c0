package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stepup-agent/stepup-agent/agent"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/ipc"
	"github.com/stepup-agent/stepup-agent/keychain"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/method/externaljwt"
	"github.com/stepup-agent/stepup-agent/method/fingerprint"
	"github.com/stepup-agent/stepup-agent/method/otp"
	"github.com/stepup-agent/stepup-agent/method/passkey"
	"github.com/stepup-agent/stepup-agent/method/password"
	"github.com/stepup-agent/stepup-agent/method/recovery"
	"github.com/stepup-agent/stepup-agent/method/totp"
	"github.com/stepup-agent/stepup-agent/method/wallet"
	"github.com/stepup-agent/stepup-agent/policy"
	"github.com/stepup-agent/stepup-agent/prompt"
	"github.com/stepup-agent/stepup-agent/service"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// policyState is the policy in force and what status says of it.
type policyState struct {
	mu      sync.Mutex
	cur     atomic.Pointer[policy.Policy]
	status  api.PolicyStatus
	log     *zap.Logger
	onApply func(*policy.Policy)
}

// apply takes the result of a load: a good policy replaces the one in
// force; a broken one is reported and the last good one stays.
func (ps *policyState) apply(p *policy.Policy, exists bool, err error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err != nil {
		ps.status.Error = err.Error()
		ps.log.Error("policy not loaded; the last good policy stays in force", zap.Error(err))
		return
	}
	ps.cur.Store(p)
	ps.status.Error = ""
	ps.status.LoadedAt = time.Now().UTC().Truncate(time.Second)
	ps.status.Builtin = !exists
	if exists {
		ps.log.Info("policy loaded", zap.String("path", ps.status.Path))
	} else {
		ps.log.Info("no policy file; using the built-in defaults", zap.String("path", ps.status.Path))
	}
	if ps.onApply != nil {
		ps.onApply(p)
	}
}

func (ps *policyState) get() *policy.Policy { return ps.cur.Load() }

func (ps *policyState) stat() api.PolicyStatus {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.status
}

func newLogger(stderr io.Writer, debug bool) *zap.Logger {
	level := zapcore.InfoLevel
	if debug {
		level = zapcore.DebugLevel
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(stderr), level)
	return zap.New(core)
}

// serve runs the agent until SIGTERM or SIGINT.
func serve(o *options, stdout, stderr io.Writer) int {
	ready := readyPipe(o)
	fail := func(err error) int {
		if ready != nil {
			fmt.Fprintf(ready, "%v\n", err)
			ready.Close()
		}
		fmt.Fprintf(stderr, "stepup-agent: %v\n", err)
		return 1
	}
	logOut := stderr
	if o.child {
		// Started in the background (eval "$(stepup-agent)"): no
		// terminal to log to, so the log goes to a file of the user's.
		logOut = io.Discard
		if f, err := openLogFile(); err == nil {
			defer f.Close()
			logOut = f
		}
	}
	log := newLogger(logOut, o.debug)
	if !o.child {
		if jl, ok := journalLogger(o.debug); ok {
			log = jl // systemd started us: structured fields in the journal
		}
	}
	defer log.Sync()

	// Socket activation: systemd's socket, checked like our own, and
	// never removed by us.
	inherited, activated, err := service.Listener(log)
	if err != nil {
		return fail(err)
	}
	if activated {
		if p := socketPath(inherited); p != "" {
			o.socket = p
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	// Policy first: a broken file at start is reported and the built-in
	// defaults stand in until it is fixed.
	ps := &policyState{log: log, status: api.PolicyStatus{Path: o.policy}}
	ps.cur.Store(policy.Default())
	ps.apply(policy.Load(o.policy))

	store, err := keychain.Open(ctx, o.keychain, keychain.Options{StateDir: audit.StateDir(), Logger: log})
	if err != nil {
		return fail(fmt.Errorf("keychain: %w", err))
	}
	defer store.Close()
	if w, ok := store.(keychain.Warner); ok && w.Warning() != "" {
		log.Warn(w.Warning())
	}

	auditPath := o.auditPath
	if auditPath == "" {
		auditPath = audit.DefaultPath()
	}
	auditLog, err := audit.Open(auditPath)
	if err != nil {
		return fail(fmt.Errorf("audit log: %w", err))
	}
	defer auditLog.Close()

	prompts := newPrompts(o.prompter, log)
	ps.onApply = func(p *policy.Policy) { prompts.policyDriver(p.Prompt.Driver) }
	prompts.policyDriver(ps.get().Prompt.Driver)

	deps := method.Deps{Policy: ps.get, Logger: log}
	a, err := agent.New(ctx, agent.Config{
		Store:        store,
		Policy:       ps.get,
		PolicyStatus: ps.stat,
		Prompts:      prompts.get,
		Methods:      methods(deps, store, log),
		External:     externalVerifier(deps),
		Audit:        auditLog,
		Log:          log,
		Socket:       o.socket,
	})
	if err != nil {
		return fail(err)
	}
	runDone := make(chan struct{})
	go func() { a.Run(ctx); close(runDone) }()

	ln := inherited
	if !activated {
		if ln, err = listen(o.socket); err != nil {
			return fail(err)
		}
	}
	srv := &ipc.Server{Handler: a, Log: log, UID: -1}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	notifier := service.NewNotifier(log)
	notifier.Check = watchdogCheck(a, notifier)
	lw := &lockWatcher{ctx: ctx, log: log, h: lockHandler{ctx: ctx, a: a, n: notifier}}
	onApply := ps.onApply
	ps.onApply = func(p *policy.Policy) { onApply(p); lw.set(p.LocksOnSleep()) }
	lw.set(ps.get().LocksOnSleep())
	defer lw.stop()

	go func() {
		if err := policy.Watch(ctx, o.policy, log, ps.apply); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("not watching the policy file for changes; send SIGHUP to reload", zap.Error(err))
		}
	}()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	log.Info("listening", zap.String("socket", o.socket), zap.Int("pid", os.Getpid()), zap.String("keychain", store.Backend()))
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
	} else if o.foreground && !activated {
		fmt.Fprint(stdout, envLines(o, os.Getpid()))
	}
	notifier.Ready(serviceStatus(a))
	go notifier.RunWatchdog(ctx)

	code := 0
loop:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				log.Info("SIGHUP: reloading the policy")
				ps.apply(policy.Load(o.policy))
				continue
			}
			log.Info("stopping", zap.String("signal", s.String()))
			break loop
		case err := <-serveErr:
			if err != nil && !errors.Is(err, ipc.ErrServerClosed) {
				log.Error("serving failed", zap.Error(err))
				code = 1
			}
			break loop
		}
	}
	notifier.Stopping()
	lw.stop()
	// Stop accepting, let quick requests finish, dismiss prompts.
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	srv.Shutdown(sctx)
	cancel()
	stop()
	<-runDone
	// Closing the listener (in Shutdown) removed our socket; removing the
	// path again here could take a newer agent's socket.
	log.Info("stopped")
	return code
}

// prompts picks the prompt selector: --prompter wins over the policy's
// prompt.driver.
type prompts struct {
	flag string
	log  *zap.Logger
	mu   sync.Mutex
	sel  prompt.Selector
	name string
}

func newPrompts(flag string, log *zap.Logger) *prompts { return &prompts{flag: flag, log: log} }

func (p *prompts) policyDriver(driver string) {
	name := p.flag
	if name == "" {
		name = driver
	}
	if name == "" {
		name = "auto"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sel != nil && p.name == name {
		return
	}
	sel, err := newSelector(name, p.log)
	if err != nil {
		p.log.Warn("prompt driver unavailable; prompts will answer no_prompter", zap.String("driver", name), zap.Error(err))
		sel = prompt.None{}
	}
	p.sel, p.name = sel, name
}

func (p *prompts) get() prompt.Selector {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sel
}

var _ net.Listener = (*net.UnixListener)(nil)

// methods are the verification methods this build offers.
func methods(deps method.Deps, store keychain.Store, log *zap.Logger) []method.Method {
	ms := []method.Method{totp.New()}
	ms = append(ms,
		passkey.New(deps),
		otp.NewEmail(deps, otp.KeychainSecret(store, otp.ItemSMTPPassword)),
		otp.NewSMS(deps, otp.KeychainSecret(store, otp.ItemSMSToken)),
		recovery.New(deps),
		wallet.New(deps, wallet.Config{}),
	)
	// fprintd answers on the system bus; the method asks it in the
	// background (Available never waits), starting now.
	var fp method.Method = fingerprint.New(fingerprint.Config{Tune: func() (time.Duration, int) {
		f := deps.Policy().Fingerprint
		return f.Timeout.D(), f.MaxTries
	}})
	if fp != nil {
		if av, ok := fp.(method.Availability); ok {
			_ = av.Available()
		}
		ms = append(ms, fp)
	} else {
		log.Info("fingerprint method left out", zap.String("why", fingerprint.Unavailable))
	}
	// STEPUP_PAM_SERVICE names another PAM service than stepup-agent.
	if pw := password.New(deps, password.Config{Service: os.Getenv("STEPUP_PAM_SERVICE")}); pw != nil {
		ms = append(ms, pw)
	} else {
		log.Info("password method left out", zap.String("why", password.Unavailable))
	}
	return ms
}

// externalVerifier checks backend assertions against the policy's JWK Set.
func externalVerifier(deps method.Deps) agent.ExternalVerifier {
	return externaljwt.NewVerifier(externaljwt.Options{Logger: deps.Logger})
}

// openLogFile opens $XDG_STATE_HOME/stepup/agent.log (0600, in a 0700
// directory) for a background agent's log.
func openLogFile() (*os.File, error) {
	dir := audit.StateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, "agent.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}
