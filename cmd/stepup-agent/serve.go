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
	"syscall"
	"time"

	"github.com/stepup-agent/stepup-agent/agent"
	"github.com/stepup-agent/stepup-agent/audit"
	"github.com/stepup-agent/stepup-agent/audit/auditlog"
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
	"github.com/stepup-agent/stepup-agent/policy/reload"
	"github.com/stepup-agent/stepup-agent/prompt"
	"github.com/stepup-agent/stepup-agent/service"
	"github.com/stepup-agent/stepup-agent/sockpath"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

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
	if err := harden(); err != nil { // before any secret is in memory
		return fail(err)
	}
	if pid, ok := runningAgent(o.socket); ok && o.child {
		// Before the log file: not a line in the running agent's log.
		return fail(alreadyRunning(o, pid))
	}
	log, closeLog := startLogger(o, stderr)
	defer closeLog()

	// Socket activation: systemd's socket, checked like our own, and
	// never removed by us.
	inherited, inheritedRemote, activated, err := service.Listeners(log, o.remoteSock)
	if err != nil {
		return fail(err)
	}
	if activated {
		if p := socketPath(inherited); p != "" {
			o.socket = p
		}
	} else if pid, ok := runningAgent(o.socket); ok {
		// Before the keychain and the audit log: a second agent must not
		// open the running one's store or write into its audit chain.
		return fail(alreadyRunning(o, pid))
	}

	// The root context ends at SIGTERM or SIGINT; everything started
	// below stops with it.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Policy first, and fail closed (startup.go).
	pol, err := startPolicy(o.policy, log)
	if err != nil {
		return fail(err)
	}

	a, closeState, err := startAgent(ctx, o, pol, log)
	if err != nil {
		return fail(err)
	}
	defer closeState()
	kcLine := keychainLine(a.Backend(), audit.StateDir())
	if ready == nil {
		fmt.Fprintf(stderr, "stepup-agent: %s\n", kcLine)
	}
	// The housekeeping (and its last keychain writes) outlives the
	// signal until the server has let its requests finish.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	runDone := make(chan struct{})
	go func() { a.Run(runCtx); close(runDone) }()

	ln := inherited
	if !activated {
		if ln, err = sockpath.Listen(o.socket); err != nil {
			if errors.Is(err, sockpath.ErrAgentRunning) {
				pid, _ := runningAgent(o.socket)
				err = alreadyRunning(o, pid)
			}
			return fail(err)
		}
	}
	rln, err := remoteListener(o, inheritedRemote)
	if err != nil {
		ln.Close()
		return fail(err)
	}
	var tr trimmer
	defer tr.stop()
	srv := &ipc.Server{Handler: a, Log: log, UID: -1, Idle: tr.idle}
	tr.busy = func() bool { return srv.Conns() > 0 }
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	if rln != nil {
		go func() { serveErr <- srv.ServeRemote(rln) }()
		log.Info("listening for ssh -R on the remote socket", zap.String("remoteSocket", socketPath(rln)))
	}

	notifier := service.NewNotifier(log)
	notifier.Check = watchdogCheck(a, notifier)
	lw := &lockWatcher{ctx: ctx, log: log, h: lockHandler{ctx: ctx, a: a, n: notifier}}
	pol.OnApply(func(p *policy.Policy) { lw.set(p.LocksOnSleep()) })
	defer lw.stop()
	go reloadPolicy(ctx, o.policy, pol, log)

	log.Info("listening", zap.String("socket", o.socket), zap.Int("pid", os.Getpid()), zap.String("keychain", a.Backend()))
	if ready != nil {
		fmt.Fprintf(ready, "ok\n%s\n", kcLine) // the parent prints the second line
		ready.Close()
	} else if o.foreground && !activated {
		fmt.Fprint(stdout, envLines(o, os.Getpid()))
	}
	notifier.Ready(serviceStatus(a))
	go notifier.RunWatchdog(ctx)
	go tr.started()

	code := 0
	select {
	case <-ctx.Done():
		log.Info("stopping: SIGTERM or SIGINT")
	case err := <-serveErr:
		if err != nil && !errors.Is(err, ipc.ErrServerClosed) {
			log.Error("serving failed", zap.Error(err))
			code = 1
		}
	}
	notifier.Stopping()
	lw.stop()
	// Stop accepting, let quick requests finish, dismiss prompts.
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	srv.Shutdown(sctx)
	cancel()
	stopRun()
	<-runDone
	// Closing the listener (in Shutdown) removed our socket; removing the
	// path again here could take a newer agent's socket.
	log.Info("stopped")
	return code
}

// startLogger makes the agent's logger: the terminal, the journal when
// systemd started the agent, or the user's log file in the background.
func startLogger(o *options, stderr io.Writer) (*zap.Logger, func()) {
	logOut := stderr
	var file *os.File
	if o.child {
		// Started in the background (eval "$(stepup-agent)"): no
		// terminal to log to, so the log goes to a file of the user's.
		logOut = io.Discard
		if f, err := openLogFile(); err == nil {
			file, logOut = f, f
		}
	}
	log := newLogger(logOut, o.debug)
	if !o.child {
		if jl, ok := journalLogger(o.debug); ok {
			log = jl // systemd started us: structured fields in the journal
		}
	}
	return log, func() {
		log.Sync()
		if file != nil {
			file.Close()
		}
	}
}

// startPolicy loads the policy at start and fails closed: a file that
// exists but does not validate (or that others could have written) stops
// the agent before it binds anything. Only a missing file gives the
// built-in defaults. A reload later keeps the last good policy instead
// (reload.Holder.Apply).
func startPolicy(path string, log *zap.Logger) (*reload.Holder, error) {
	p, exists, err := policy.Load(path)
	if err != nil {
		return nil, &startPolicyError{path: path, err: err}
	}
	pol := reload.NewHolder(path, log, nil)
	pol.Apply(p, exists, nil)
	return pol, nil
}

// reloadPolicy applies the policy file again when it changes and on
// SIGHUP, until ctx ends.
func reloadPolicy(ctx context.Context, path string, pol *reload.Holder, log *zap.Logger) {
	go func() {
		if err := reload.Watch(ctx, path, log, pol.Apply); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("not watching the policy file for changes; send SIGHUP to reload", zap.Error(err))
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading the policy")
			pol.Apply(policy.Reload(path))
		}
	}
}

// startAgent opens the keychain and the audit log and makes the agent;
// closeState closes what it opened.
func startAgent(ctx context.Context, o *options, pol *reload.Holder, log *zap.Logger) (a *agent.Agent, closeState func(), err error) {
	var closers []func() error
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	// On an error, close what was opened here (the named results are
	// nil by then: a return sets them before deferred calls run).
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	store, err := keychain.Open(ctx, o.keychain, keychain.Options{StateDir: audit.StateDir(), Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("keychain: %w", err)
	}
	closers = append(closers, store.Close)
	if w, ok := store.(keychain.Warner); ok && w.Warning() != "" {
		log.Warn(w.Warning())
	}
	auditPath := o.auditPath
	if auditPath == "" {
		auditPath = audit.DefaultPath()
	}
	auditLog, err := auditlog.OpenLog(ctx, auditlog.Options{Path: auditPath, Store: store, Log: log, Rotation: func() auditlog.Rotation {
		a := pol.Get().Audit
		return auditlog.Rotation{MaxSize: a.MaxSize, Keep: a.Keep, Compress: a.Compress == nil || *a.Compress}
	}})
	if err != nil {
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	closers = append(closers, auditLog.Close) // the shutdown checkpoint
	// Every policy load, the one at start included, ok or invalid.
	pol.OnLoad(func(path string, err error) {
		r := audit.Record{Event: audit.EventPolicyLoad, UID: os.Getuid(), Detail: path, Result: "ok"}
		if err != nil {
			r.Detail, r.Result = path+": "+err.Error(), "invalid"
		}
		auditLog.Write(r)
	})

	prompts := newPrompts(o.prompter, log)
	pol.OnApply(func(p *policy.Policy) { prompts.policyDriver(p.Prompt.Driver) })
	// One clock for the agent and every method.
	deps := method.Deps{Now: time.Now, Policy: pol.Get, Logger: log}
	a, err = agent.New(ctx, agent.Config{
		Now:          deps.Now,
		Store:        store,
		Policy:       pol.Get,
		PolicyStatus: pol.Status,
		Prompts:      prompts.get,
		Methods:      methods(deps, store, log, o.pamHelper),
		External:     externalVerifier(deps),
		Audit:        auditLog,
		Log:          log,
		Socket:       o.socket,
	})
	if err != nil {
		return nil, nil, err
	}
	return a, closeAll, nil
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

// methods are the verification methods this build offers.
func methods(deps method.Deps, store keychain.Store, log *zap.Logger, pamHelper string) []method.Method {
	ms := []method.Method{
		totp.New(totp.Config{Deps: deps}),
		passkey.New(passkey.Config{Deps: deps}),
		otp.NewEmail(otp.Config{Deps: deps, Secret: otp.KeychainSecret(store, otp.ItemSMTPPassword)}),
		otp.NewSMS(otp.Config{Deps: deps, Secret: otp.KeychainSecret(store, otp.ItemSMSToken)}),
		recovery.New(recovery.Config{Deps: deps}),
		wallet.New(wallet.Config{Deps: deps}),
	}
	// fprintd answers on the system bus; the method asks it in the
	// background (Available never waits), starting now. It reads the
	// policy's fingerprint section at each verification.
	var fp method.Method = fingerprint.New(fingerprint.Config{Deps: deps})
	if fp != nil {
		if av, ok := fp.(method.Availability); ok {
			_ = av.Available()
		}
		ms = append(ms, fp)
	} else {
		log.Info("fingerprint method left out", zap.String("why", fingerprint.Unavailable))
	}
	// STEPUP_PAM_SERVICE names another PAM service than stepup-agent.
	// The method logs whether it is available (the helper, the service
	// file) when it is first asked, here at start.
	pw := password.New(password.Config{Deps: deps, Service: os.Getenv("STEPUP_PAM_SERVICE"), Helper: pamHelper})
	pw.Unavailable()
	return append(ms, pw)
}

// externalVerifier checks backend assertions against the policy's JWK Set.
func externalVerifier(deps method.Deps) agent.ExternalVerifier {
	return externaljwt.New(externaljwt.Config{Deps: deps})
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

// remoteListener is the remote socket (docs/remote.md): the one the
// service manager passed, else one bound at --remote-socket with the
// socket's rules; nil with --remote-socket none.
func remoteListener(o *options, inherited net.Listener) (net.Listener, error) {
	if o.remoteSock == "none" {
		if inherited != nil {
			inherited.Close()
		}
		return nil, nil
	}
	if inherited != nil {
		return inherited, nil
	}
	ln, err := sockpath.Listen(o.remoteSock)
	if err != nil {
		return nil, fmt.Errorf("the remote socket (for ssh -R): %w; pass --remote-socket PATH for another path, or --remote-socket none to serve no remote callers", err)
	}
	return ln, nil
}
