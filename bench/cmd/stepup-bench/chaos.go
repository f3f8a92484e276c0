//go:build linux

package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stepup-agent/stepup-agent/internal/keyringtest"
	"github.com/stepup-agent/stepup-agent/keychain"
)

// The chaos subcommand (docs/RELIABILITY.md, "Chaos"):
//
//	go run ./bench/cmd/stepup-bench chaos -kills 500 -keychain file
//
// It starts an agent of this tree on a persistent state directory, runs
// mints (a backend's external_jwt assertion, so that no person is
// needed), consumes and resets against it from several connections, kills
// it with SIGKILL at a random moment, starts it again, and checks, as an
// independent client, what every answer received before the kill
// promised: a token minted and not consumed is still valid, a token
// consumed is not valid again, a reset token is not valid again, an
// assertion's jti is not accepted twice, and the agent starts on its
// keychain (not corrupt). Hook: -check-cmd runs after each restart (the
// audit chain check) and counts as a violation when it fails.

type chaosConfig struct {
	kills     int
	keychain  string
	maxDelay  time.Duration
	workers   int
	checkCmd  string
	agentArgs multiFlag
	duration  time.Duration
	freezePID int
	deadline  time.Duration
	fullFS    string
	creds     bool
	audit     bool
	ownKR     bool
	krFault   string
	tokenTTL  time.Duration
	pace      time.Duration
}

type chaosToken struct {
	token string
	jti   string // the assertion's
}

type ledger struct {
	mu        sync.Mutex
	valid     map[string]bool // minted, answered, not consumed or reset (as far as answers tell)
	consumed  map[string]bool // a consume answered valid
	reset     map[string]bool // covered by a resetState answered before the kill
	assertion []string        // assertions whose mint was answered
	pending   map[string]bool // a consume or reset sent but not answered: state unknown
	resets    int             // resets in flight
	resetGen  int             // resets answered
}

func chaosMain(args []string) error {
	var c chaosConfig
	fs := flag.NewFlagSet("chaos", flag.ExitOnError)
	fs.IntVar(&c.kills, "kills", 100, "kill -9 the agent this many times")
	fs.StringVar(&c.keychain, "keychain", "file", "the agent's --keychain (file, secretservice)")
	fs.DurationVar(&c.maxDelay, "max-delay", 400*time.Millisecond, "kill at a random moment up to this long after the burst starts")
	fs.IntVar(&c.workers, "workers", 4, "connections issuing requests during a burst")
	fs.StringVar(&c.checkCmd, "check-cmd", "", "a shell command run after each restart (e.g. the audit chain check; $STATE is the state directory, $AUDIT the audit log); failing counts as a violation")
	fs.DurationVar(&c.duration, "duration", time.Hour, "stop after this even if kills remain")
	fs.Var(&c.agentArgs, "agent-arg", "an extra argument for the agent (repeatable)")
	fs.StringVar(&c.fullFS, "fullfs", "", "instead of the kill loop: put the state directory on a tmpfs of `SIZE` (e.g. 512k; needs root), fill it, mint into it, free it, mint again, restart, and check (file keychain)")
	fs.IntVar(&c.freezePID, "freeze-pid", 0, "SIGSTOP this `PID` (the Secret Service's gnome-keyring-daemon) for a random 0-6 s in each burst, then SIGCONT; every request must still be answered within -deadline")
	fs.DurationVar(&c.deadline, "deadline", 5*time.Second, "with -freeze-pid or -keyring-fault: the longest a request may wait (the keychain's 2 s call timeout, twice, and a margin)")
	fs.BoolVar(&c.creds, "creds", true, "also enroll and remove TOTP credentials, step up with TOTP and recovery codes and regenerate the recovery set in each burst, and check them after each restart (needs oathtool)")
	fs.BoolVar(&c.audit, "audit-verify", true, "after each restart run `stepupctl audit verify` (the chain against the agent's head) and check that status reports no audit break")
	fs.BoolVar(&c.ownKR, "own-keyring", false, "with -keychain secretservice: start a private D-Bus bus and gnome-keyring for the run (needed by -keyring-fault); without it the session's Secret Service must hold no other agent's items")
	fs.StringVar(&c.krFault, "keyring-fault", "", "with -own-keyring: in each burst `freeze` gnome-keyring (SIGSTOP 0-6 s), `kill` it (SIGKILL, started again after 0-3 s), or `both` in turn; the agent is killed only once it reports the keychain back, and every request must be answered within -deadline")
	fs.DurationVar(&c.tokenTTL, "token-ttl", 3*time.Minute, "the ttl of the minted scope: every check runs seconds after its mint, and a short ttl keeps the keychain from filling up over a long run")
	fs.DurationVar(&c.pace, "pace", 0, "each mint worker waits this long between its requests (a write rate gnome-keyring keeps up with)")
	fs.Parse(args)
	chaosPace = c.pace
	ctx := context.Background()
	slowest.limit = c.deadline
	if c.freezePID == 0 && c.krFault == "" {
		slowest.limit = 0
	}
	if c.krFault != "" && (!c.ownKR || c.keychain != "secretservice") {
		return errors.New("-keyring-fault needs -own-keyring and -keychain secretservice")
	}
	if c.creds {
		if _, err := exec.LookPath("oathtool"); err != nil {
			return errors.New("-creds needs oathtool (scripts/install-deps.sh installs it)")
		}
	}
	var kr *keyringtest.Keyring
	if c.ownKR {
		var err error
		kr, err = keyringtest.Start(func(addr string) error {
			os.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
			s, err := keychain.OpenSecretService(context.Background(), keychain.Options{Timeout: time.Second})
			if err == nil {
				s.Close()
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("own keyring: %w", err)
		}
		defer kr.Close()
	}

	dir, err := socketDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "bin")
	if err := runCmd(ctx, root, 5*time.Minute, "go", "build", "-o", bin+"/", "./cmd/stepup-agent", "./cmd/stepupctl", "./cmd/stepupctl-inspect"); err != nil {
		return err
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "chaos", Algorithm: "EdDSA", Use: "sig"}}})
	jwksPath := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwksPath, jwks, 0o600)
	pol := filepath.Join(dir, "config", "stepup", "policy.yaml")
	os.MkdirAll(filepath.Dir(pol), 0o700)
	// The audit log rotates every 256 KiB, so that kills land amid
	// rotations too.
	os.WriteFile(pol, []byte(fmt.Sprintf("limits: {maxFailures: 1000000, window: 1s}\n"+
		"audit: {maxSize: 256KiB}\n"+
		"externalJwt: {jwks: %q, subject: chaos, issuer: chaos-backend, audience: stepup-agent}\n"+
		"scopes:\n"+
		"  chaos:single: {ttl: %s, singleUse: true, methods: [external_jwt, totp, recovery_code]}\n"+
		"  chaos:multi: {ttl: 60m, singleUse: false, methods: [external_jwt]}\n"+
		"  credential:link: {ttl: 60m, methods: [external_jwt]}\n"+
		"  credential:update: {ttl: 60m, methods: [external_jwt]}\n"+
		"  credential:unlink: {ttl: 5m, methods: [external_jwt]}\n", jwksPath, c.tokenTTL)), 0o600)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "chaos"))
	if err != nil {
		return err
	}
	var seq int64
	var seqMu sync.Mutex
	assertion := func(scope string) (string, string) {
		seqMu.Lock()
		seq++
		jti := fmt.Sprintf("chaos-%d-%d", time.Now().UnixNano(), seq)
		seqMu.Unlock()
		now := time.Now()
		s, _ := jwt.Signed(signer).Claims(map[string]any{"sub": "chaos", "iss": "chaos-backend", "aud": "stepup-agent", "jti": jti,
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "scope": scope}).Serialize()
		return s, jti
	}
	env := benchEnv(dir)
	sock := filepath.Join(dir, "chaos.sock")
	ctlEnv := append(append([]string{}, env...), "STEPUP_AUTH_SOCK="+sock)
	audit := filepath.Join(dir, "audit.jsonl")
	start := func() (*exec.Cmd, error) {
		os.Remove(sock)
		argv := append([]string{"-D", "-a", sock, "--keychain", c.keychain, "--prompter", "none", "--audit", audit}, c.agentArgs...)
		cmd := exec.Command(filepath.Join(bin, "stepup-agent"), argv...)
		cmd.Env = env
		lf, _ := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := waitDial(wctx, sock); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("the agent did not start again (keychain corrupt?): %w; its log ends: %s", err, logTail(filepath.Join(dir, "agent.log"), 600))
		}
		return cmd, nil
	}
	if c.fullFS != "" {
		return fullFS(c, dir, env, start, sock, assertion)
	}
	led := &ledger{valid: map[string]bool{}, consumed: map[string]bool{}, reset: map[string]bool{}, pending: map[string]bool{}}
	var violations []string
	var vmu sync.Mutex
	violate := func(format string, a ...any) {
		m := fmt.Sprintf(format, a...)
		vmu.Lock()
		defer vmu.Unlock()
		violations = append(violations, m)
		fmt.Fprintln(os.Stderr, "VIOLATION:", m)
	}
	var tokensChecked, consumedChecked, resetChecked, replayChecked int
	deadline := time.Now().Add(c.duration)
	kills := 0
	var startFails int
	cl := newCredLedger()
	var prof chaosProfile
	runStart := time.Now()
	for kills < c.kills && time.Now().Before(deadline) {
		t0 := time.Now()
		cmd, err := start()
		prof.start.add(time.Since(t0))
		if err != nil {
			violate("%v", err)
			startFails++
			if startFails > 3 {
				break
			}
			continue
		}
		if c.creds && cl.totp["chaos-base"] == nil {
			if err := cl.setup(sock); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				return fmt.Errorf("enrolling the first TOTP credential: %w", err)
			}
		}
		t1 := time.Now()
		// Check what the last run's answers promised.
		chk, err := dialRPC(sock)
		if err != nil {
			violate("dial after restart: %v", err)
		} else {
			led.mu.Lock()
			for tok, ok := range led.valid {
				if !ok || led.pending[tok] {
					continue
				}
				tokensChecked++
				var v struct{ Valid bool }
				if err := chk.call("verifyToken", map[string]any{"token": tok, "scope": "chaos:single"}, &v); err != nil || !v.Valid {
					violate("a token minted and answered before kill %d is not valid after the restart: %v", kills, err)
				}
			}
			for tok := range led.consumed {
				consumedChecked++
				if err := chk.call("verifyToken", map[string]any{"token": tok, "scope": "chaos:single", "consume": true}, nil); err == nil {
					violate("a consumed token is valid again after kill %d", kills)
				}
			}
			for tok := range led.reset {
				resetChecked++
				if err := chk.call("verifyToken", map[string]any{"token": tok, "scope": "chaos:single"}, nil); err == nil {
					violate("a reset token is valid again after kill %d", kills)
				}
			}
			// Replays count as failures of external_jwt: check a sample of
			// three per restart.
			for i, a := range led.assertion {
				if i >= 3 {
					break
				}
				replayChecked++
				if err := chk.call("requestExternalAuthElevatedToken", map[string]any{"assertion": a, "requestedScopes": []string{"chaos:single"}}, nil); err == nil {
					violate("an assertion was accepted twice across kill %d", kills)
				}
			}
			// The checks above consume nothing that was valid (verify
			// without consume) except tokens already consumed; start
			// the next round with a clean ledger of this run's promises.
			led.valid, led.consumed, led.reset, led.assertion, led.pending = map[string]bool{}, map[string]bool{}, map[string]bool{}, nil, map[string]bool{}
			led.mu.Unlock()
			if c.creds && kills > 0 {
				cl.check(chk, kills, violate)
			}
			if c.audit {
				var st struct {
					Audit struct {
						Break   string `json:"break"`
						Warning string `json:"warning"`
					} `json:"audit"`
				}
				if err := chk.call("status", map[string]any{}, &st); err != nil {
					violate("status after kill %d: %v", kills, err)
				} else if st.Audit.Break != "" {
					violate("after kill %d the agent reports an audit chain break: %s", kills, st.Audit.Break)
				}
			}
			chk.c.Close()
		}
		if c.audit {
			vc := exec.Command(filepath.Join(bin, "stepupctl"), "audit", "verify")
			vc.Env = ctlEnv
			if out, err := vc.CombinedOutput(); err != nil {
				violate("stepupctl audit verify after kill %d: %v: %s", kills, err, strings.TrimSpace(string(out)))
			} else {
				cl.st.auditVerified++
			}
			if m, _ := filepath.Glob(filepath.Join(dir, "audit.break-*")); len(m) > 0 {
				violate("after kill %d the agent set the audit log aside as broken: %v", kills, m)
			}
		}
		prof.check.add(time.Since(t1))
		t2 := time.Now()
		if c.checkCmd != "" {
			hc := exec.Command("sh", "-c", c.checkCmd)
			hc.Env = append(os.Environ(), "STATE="+dir, "AUDIT="+audit)
			if out, err := hc.CombinedOutput(); err != nil {
				violate("check-cmd after kill %d: %v: %s", kills, err, strings.TrimSpace(string(out)))
			}
		}
		// A burst of mints, consumes and resets, killed at a random moment.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < c.workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				chaosWorker(sock, w, led, assertion, stop)
			}(w)
		}
		var killAt time.Time // zero: a random moment up to -max-delay
		if c.creds {
			first := make(chan opStart, 1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				credWorker(sock, cl, led, assertion, stop, violate, first)
			}()
			// The kill falls at a random moment of the credential
			// worker's first operation (or soon after it): a third of
			// them are cut, at any point, and the rest answered.
			select {
			case o := <-first:
				killAt = o.at.Add(time.Duration(mrand.Int64N(int64(max(c.maxDelay, cl.expected(o.op)*3/2)))))
			case <-time.After(5 * time.Second):
			}
		}
		if c.freezePID > 0 {
			syscall.Kill(c.freezePID, syscall.SIGSTOP)
			time.Sleep(time.Duration(mrand.Int64N(int64(6 * time.Second))))
			syscall.Kill(c.freezePID, syscall.SIGCONT)
		}
		if c.krFault != "" {
			time.Sleep(time.Duration(mrand.Int64N(int64(c.maxDelay))))
			fault := c.krFault
			if fault == "both" {
				fault = [2]string{"freeze", "kill"}[kills%2]
			}
			t := time.Now()
			if fault == "freeze" {
				kr.Signal(syscall.SIGSTOP)
				time.Sleep(time.Duration(mrand.Int64N(int64(6 * time.Second))))
				kr.Signal(syscall.SIGCONT)
				faults.freezes++
			} else {
				kr.Kill()
				time.Sleep(time.Duration(mrand.Int64N(int64(3 * time.Second))))
				if err := kr.StartDaemon(); err != nil {
					violate("gnome-keyring did not start again: %v", err)
				}
				faults.kills++
			}
			faults.down.add(time.Since(t))
			// Nothing may be lost once the keychain is back: the agent is
			// killed only once it says so (its writes made meanwhile are
			// then in gnome-keyring).
			t = time.Now()
			if err := waitKeychainBack(sock, 60*time.Second); err != nil {
				violate("after gnome-keyring's %s (burst %d): %v", fault, kills+1, err)
			}
			faults.back.add(time.Since(t))
		}
		if killAt.IsZero() || c.krFault != "" {
			time.Sleep(time.Duration(mrand.Int64N(int64(c.maxDelay))))
		} else {
			time.Sleep(time.Until(killAt))
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
		prof.burst.add(time.Since(t2))
		kills++
		if kills%50 == 0 {
			fmt.Fprintf(os.Stderr, "chaos: %d kills, %d violations, %s\n", kills, len(violations), time.Since(runStart).Round(time.Second))
		}
	}
	fmt.Printf("per cycle (mean, max): agent start to socket %s; checks after the restart %s; burst %s; %d cycles in %s\n",
		prof.start, prof.check, prof.burst, kills, time.Since(runStart).Round(time.Second))
	if c.krFault != "" {
		fmt.Printf("gnome-keyring faults: %d freezes, %d kills; down (mean, max) %s; the agent reported the keychain back after (mean, max) %s\n",
			faults.freezes, faults.kills, faults.down, faults.back)
	}
	if c.freezePID > 0 || c.krFault != "" {
		slowest.mu.Lock()
		fmt.Printf("keychain faults in every burst: the slowest answer took %v (deadline %v); answers later than the deadline: %d\n", slowest.max.Round(time.Millisecond), c.deadline, slowest.late)
		if slowest.late > 0 {
			violations = append(violations, fmt.Sprintf("%d answers later than %v while the keychain was frozen", slowest.late, c.deadline))
		}
		slowest.mu.Unlock()
	}
	chaosErrs.mu.Lock()
	fmt.Printf("mints answered: %d; refused: %v\n", chaosErrs.good, chaosErrs.m)
	chaosErrs.mu.Unlock()
	fmt.Printf("chaos (%s keychain): %d kills; checked after restarts: %d tokens still valid, %d consumed tokens refused, %d reset tokens refused, %d assertions refused on replay; violations: %d\n",
		c.keychain, kills, tokensChecked, consumedChecked, resetChecked, replayChecked, len(violations))
	if c.creds || c.audit {
		fmt.Printf("credentials and audit: %s\n", cl.st)
	}
	for i, v := range violations {
		if i == 10 {
			fmt.Printf("  ... %d more\n", len(violations)-10)
			break
		}
		fmt.Println("  " + v)
	}
	if len(violations) > 0 {
		return fmt.Errorf("%d violations", len(violations))
	}
	return nil
}

// chaosWorker mints single-use tokens, consumes some, resets some, and
// records in led only what an answer received says.
func chaosWorker(sock string, w int, led *ledger, assertion func(string) (string, string), stop <-chan struct{}) {
	r, err := dialRPC(sock)
	if err != nil {
		return
	}
	defer r.c.Close()
	go func() { <-stop; r.c.Close() }()
	rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var mine []string
	for {
		select {
		case <-stop:
			return
		case <-time.After(chaosPace):
		}
		// Resets are rare (one request in 25): each revokes every token
		// of the scope, and tokens minted while one ran are left out of
		// the checks.
		switch x := rng.IntN(100); {
		case x < 60 || len(mine) == 0: // mint
			a, _ := assertion("chaos:single")
			var tr struct{ Token string }
			gen0, busy0 := led.resetMark()
			if err := timed(func() error {
				return r.call("requestExternalAuthElevatedToken", map[string]any{"assertion": a, "requestedScopes": []string{"chaos:single"}}, &tr)
			}); err != nil {
				if isConnErr(err) {
					return
				}
				chaosErrs.add(err)
				continue
			}
			chaosErrs.ok()
			led.minted(tr.Token, gen0, busy0)
			led.mu.Lock()
			led.assertion = append(led.assertion, a)
			led.mu.Unlock()
			mine = append(mine, tr.Token)
		case x < 96: // consume
			tok := mine[len(mine)-1]
			mine = mine[:len(mine)-1]
			led.mu.Lock()
			led.pending[tok] = true
			led.mu.Unlock()
			var v struct{ Valid bool }
			err := timed(func() error {
				return r.call("verifyToken", map[string]any{"token": tok, "scope": "chaos:single", "consume": true}, &v)
			})
			if err != nil && isConnErr(err) {
				return
			}
			led.mu.Lock()
			delete(led.pending, tok)
			delete(led.valid, tok)
			if err == nil && v.Valid {
				led.consumed[tok] = true
			}
			led.mu.Unlock()
		default: // reset one token's scope: every token of chaos:single goes
			led.mu.Lock()
			var all []string
			for t := range led.valid {
				all = append(all, t)
				led.pending[t] = true
			}
			led.resets++
			led.mu.Unlock()
			err := timed(func() error { return r.call("resetState", map[string]any{"scopes": []string{"chaos:single"}}, nil) })
			if err != nil && isConnErr(err) {
				return
			}
			led.mu.Lock()
			led.resets--
			led.resetGen++
			for _, t := range all {
				delete(led.pending, t)
				if err == nil {
					delete(led.valid, t)
					led.reset[t] = true
				}
			}
			led.mu.Unlock()
			mine = nil
		}
	}
}

// minted records a token an answer handed out; gen0 and busy0 are the
// reset generation and whether a reset was in flight when its request
// was sent.
// resetMark is what minted needs to know of the resets around a mint:
// the reset generation, and whether a reset is running, before it.
func (led *ledger) resetMark() (gen int, busy bool) {
	led.mu.Lock()
	defer led.mu.Unlock()
	return led.resetGen, led.resets > 0
}

func (led *ledger) minted(tok string, gen0 int, busy0 bool) {
	led.mu.Lock()
	defer led.mu.Unlock()
	led.valid[tok] = true
	if busy0 || led.resets > 0 || led.resetGen != gen0 {
		// A reset ran while this mint did: whether it revoked the token
		// depends on an order no answer tells.
		led.pending[tok] = true
	}
}

// chaosPace is -pace.
var chaosPace time.Duration

// chaosErrs counts the mints refused (not cut by a kill), by message.
var chaosErrs = &errCount{m: map[string]int{}}

type errCount struct {
	mu   sync.Mutex
	m    map[string]int
	good int
}

func (e *errCount) add(err error) {
	e.mu.Lock()
	e.m[err.Error()]++
	e.mu.Unlock()
}

func (e *errCount) ok() {
	e.mu.Lock()
	e.good++
	e.mu.Unlock()
}

// slowest records the longest wait for an answer during bursts.
var slowest struct {
	mu    sync.Mutex
	max   time.Duration
	late  int
	limit time.Duration
}

func timed(f func() error) error {
	t := time.Now()
	err := f()
	if err != nil && isConnErr(err) {
		return err // the kill, not the agent's answer
	}
	d := time.Since(t)
	slowest.mu.Lock()
	slowest.max = max(slowest.max, d)
	if slowest.limit > 0 && d > slowest.limit {
		slowest.late++
	}
	slowest.mu.Unlock()
	return err
}

func isConnErr(err error) bool {
	s := err.Error()
	return !strings.Contains(s, ": 4") && !strings.Contains(s, ": -32")
}

// fullFS runs the file backend on a full filesystem: every mint either
// answers a token that survives a restart or a clear error; keychain.json
// is never half-written; minting works again once space returns.
func fullFS(c chaosConfig, dir string, env []string, start func() (*exec.Cmd, error), sock string, assertion func(string) (string, string)) error {
	state := filepath.Join(dir, "state")
	os.MkdirAll(state, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+c.fullFS+",mode=0700", "tmpfs", state).CombinedOutput(); err != nil {
		return fmt.Errorf("mount tmpfs: %v: %s", err, out)
	}
	defer exec.Command("umount", "-l", state).Run()
	cmd, err := start()
	if err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	r, err := dialRPC(sock)
	if err != nil {
		return err
	}
	minted := map[string]string{} // token -> phase
	phase := "before"
	mint := func(n int) (ok int, errs map[string]int) {
		errs = map[string]int{}
		for i := 0; i < n; i++ {
			a, _ := assertion("chaos:multi")
			var tr struct{ Token string }
			if err := r.call("requestExternalAuthElevatedToken", map[string]any{"assertion": a, "requestedScopes": []string{"chaos:multi"}}, &tr); err != nil {
				errs[err.Error()]++
				continue
			}
			minted[tr.Token] = phase
			ok++
		}
		return ok, errs
	}
	ok0, _ := mint(20)
	// Fill the filesystem.
	filler := filepath.Join(state, "filler")
	f, _ := os.Create(filler)
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	phase = "full"
	okFull, errsFull := mint(200)
	var violations []string
	kc := filepath.Join(state, "stepup", "keychain.json")
	if b, err := os.ReadFile(kc); err != nil || !json.Valid(b) {
		violations = append(violations, fmt.Sprintf("keychain.json unreadable or half-written on the full filesystem: %v", err))
	}
	for m := range errsFull {
		if strings.Contains(m, "-32603") {
			violations = append(violations, "an internal error instead of a clear one: "+m)
		}
	}
	os.Remove(filler)
	phase = "after"
	okAfter, errsAfter := mint(20)
	if okAfter == 0 {
		violations = append(violations, fmt.Sprintf("no mint once space returned: %v", errsAfter))
	}
	r.c.Close()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	cmd, err = start()
	if err != nil {
		return fmt.Errorf("restart after the full filesystem: %w", err)
	}
	chk, err := dialRPC(sock)
	if err != nil {
		return err
	}
	lost := 0
	lostBy := map[string]int{}
	for tok, ph := range minted {
		var v struct{ Valid bool }
		if err := chk.call("verifyToken", map[string]any{"token": tok, "scope": "chaos:multi"}, &v); err != nil || !v.Valid {
			lost++
			lostBy[ph]++
		}
	}
	chk.c.Close()
	if lost > 0 {
		violations = append(violations, fmt.Sprintf("%d tokens answered before the restart are not valid after it (by when they were minted: %v)", lost, lostBy))
	}
	fmt.Printf("full filesystem (tmpfs %s, file keychain): %d minted before filling; while full: %d minted, refused: %v; after freeing: %d of 20 minted; after a kill -9 and restart: %d of %d answered tokens valid; keychain.json whole; violations: %d\n",
		c.fullFS, ok0, okFull, errsFull, okAfter, len(minted)-lost, len(minted), len(violations))
	for _, v := range violations {
		fmt.Println("  " + v)
	}
	if len(violations) > 0 {
		return fmt.Errorf("%d violations", len(violations))
	}
	return nil
}

// chaosProfile is where a cycle's time goes.
type chaosProfile struct{ start, check, burst durStat }

type durStat struct {
	n        int
	sum, max time.Duration
}

func (d *durStat) add(x time.Duration) {
	d.n++
	d.sum += x
	d.max = max(d.max, x)
}

func (d durStat) String() string {
	if d.n == 0 {
		return "-"
	}
	return fmt.Sprintf("%s, %s", (d.sum / time.Duration(d.n)).Round(time.Millisecond), d.max.Round(time.Millisecond))
}

// faults counts what -keyring-fault did.
var faults struct {
	freezes, kills int
	down, back     durStat
}

// waitKeychainBack waits until the agent's status says its keychain is
// available (it has written what it kept in memory meanwhile).
func waitKeychainBack(sock string, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		r, err := dialRPC(sock)
		if err == nil {
			var st struct {
				Keychain struct {
					Available bool   `json:"available"`
					Warning   string `json:"warning"`
				} `json:"keychain"`
			}
			err = r.call("status", map[string]any{}, &st)
			r.c.Close()
			if err == nil && st.Keychain.Available {
				return nil
			}
			if err == nil {
				last = st.Keychain.Warning
			} else {
				last = err.Error()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the agent did not report its keychain available within %s (last: %s)", d, last)
}

// logTail returns the last n bytes of the file at path, on one line.
func logTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", " | ")
}
