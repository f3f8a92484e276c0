// Package stepuptest runs a real stepup-agent for tests, as net/http/httptest
// runs a real server: Start builds cmd/stepup-agent (once per test binary),
// starts it in the foreground on a private socket with an in-memory
// keychain and no prompter, and stops it when the test ends.
//
// With no prompter the agent cannot show a prompt, so tests step up on the
// custom-UI path: EnrollTOTP enrolls TOTP credentials and StepUp answers a
// startVerification with a code computed by oathtool(1), an implementation
// independent of the agent's. Every TOTP time step is accepted once per
// credential, so Agent keeps a pool of credentials and hands out unused
// (credential, step) pairs; it waits for the next 30-second step only when
// the pool is spent.
//
//	a := stepuptest.Start(t, stepuptest.Options{})
//	a.EnrollTOTP(t, 3)
//	tok, err := a.StepUp(ctx, []string{"wallet:export"})
package stepuptest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// Module is the import path of the stepup-agent module.
const Module = "github.com/stepup-agent/stepup-agent"

// Options configure Start.
type Options struct {
	// Policy is the policy file's text; empty means the built-in defaults.
	Policy string
	// Prompter is --prompter; empty means none.
	Prompter string
	// Env is added to the agent's environment.
	Env []string
}

// Agent is a running stepup-agent.
type Agent struct {
	// Socket is the agent's socket path; Env sets STEPUP_AUTH_SOCK to it.
	Socket string
	// Dir is a private directory for the agent's files (policy, audit log).
	Dir string
	// Client talks to the agent; it sends no prompt environment.
	Client *stepup.Client
	// RecoveryCodes are the codes the first MFA enrollment returned.
	RecoveryCodes []string

	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}

	mu    sync.Mutex
	creds []*totpCred
}

type totpCred struct {
	secret string
	last   uint64 // the highest time step used
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
	binDir  string
)

// Build builds the command cmd/NAME of this module (stepup-agent,
// stepupctl) once per test binary and returns the executable's path.
func Build(t testing.TB, name string) string {
	t.Helper()
	return BuildPackage(t, Module+"/cmd/"+name)
}

// BuildPackage builds the main package pkg once per test binary and
// returns the executable's path.
func BuildPackage(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	if binDir == "" {
		d, err := os.MkdirTemp("", "stepuptest-bin")
		if err != nil {
			t.Fatal(err)
		}
		binDir = d
	}
	out := filepath.Join(binDir, filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

// RequireProgram skips the test when name is not on PATH, but fails it in
// CI (CI=true or STEPUP_TEST_REQUIRE_ALL set), where every prerequisite
// must be installed (scripts/apt-packages.txt).
func RequireProgram(t testing.TB, name string) string {
	t.Helper()
	return testenv.Program(t, name)
}

// Start starts an agent for the test and stops it at the test's end.
func Start(t testing.TB, o Options) *Agent {
	t.Helper()
	RequireProgram(t, "oathtool")
	bin := Build(t, "stepup-agent")
	// A short path: a socket path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "stepup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "agent.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"-D", "-a", sock, "--keychain", "memory", "--audit", filepath.Join(dir, "audit.jsonl")}
	prompter := o.Prompter
	if prompter == "" {
		prompter = "none"
	}
	args = append(args, "--prompter", prompter)
	policy := filepath.Join(dir, "policy.yaml")
	if o.Policy != "" {
		if err := os.WriteFile(policy, []byte(o.Policy), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args = append(args, "--policy", policy)

	a := &Agent{Socket: sock, Dir: dir, stderr: &lockedBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"STEPUP_AUTH_SOCK="+sock)
	a.cmd.Env = append(a.cmd.Env, o.Env...)
	a.cmd.Stderr = a.stderr
	a.cmd.Stdout = a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(a.stop)
	a.Client = &stepup.Client{Socket: sock, Env: &api.PromptEnv{}}
	t.Cleanup(func() { a.Client.Close() })

	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := a.Client.Status(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-a.done:
			t.Fatalf("stepup-agent exited: %v\n%s", a.cmd.ProcessState, a.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("stepup-agent did not answer on %s: %v\n%s", sock, err, a.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return a
}

// stop ends the agent by its PID: SIGTERM, then SIGKILL after 5 seconds.
func (a *Agent) stop() {
	if a.cmd.Process == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// Log returns what the agent wrote to stderr so far.
func (a *Agent) Log() string { return a.stderr.String() }

// Env returns os.Environ() with STEPUP_AUTH_SOCK pointing at the agent.
func (a *Agent) Env() []string {
	return append(os.Environ(), "STEPUP_AUTH_SOCK="+a.Socket)
}

// EnrollTOTP enrolls n TOTP credentials. Enrolling a second one needs a
// credential:link token; EnrollTOTP steps up for it with the first.
func (a *Agent) EnrollTOTP(t testing.TB, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < n; i++ {
		a.mu.Lock()
		have := len(a.creds)
		a.mu.Unlock()
		if have > 0 {
			if _, err := a.Client.GetToken(ctx, "credential:link"); err != nil {
				if _, err := a.StepUp(ctx, []string{"credential:link"}); err != nil {
					t.Fatalf("step up for credential:link: %v", err)
				}
			}
		}
		res, err := a.Client.EnrollStart(ctx, api.EnrollStartParams{Method: api.TOTP, Label: fmt.Sprintf("test %d", have+1)})
		if err != nil {
			t.Fatalf("enrollStart totp: %v", err)
		}
		id := res.EnrollmentID
		if id == "" || res.TOTPEnrollment == nil || res.Secret == "" {
			t.Fatalf("enrollStart totp: no enrollmentId or secret in the result")
		}
		c := &totpCred{secret: res.Secret}
		code, err := a.codeFor(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		fin, err := a.Client.EnrollFinish(ctx, id, map[string]string{"code": code})
		if err != nil {
			t.Fatalf("enrollFinish totp: %v", err)
		}
		a.mu.Lock()
		a.creds = append(a.creds, c)
		if len(fin.RecoveryCodes) > 0 {
			a.RecoveryCodes = fin.RecoveryCodes
		}
		a.mu.Unlock()
	}
}

// StepUp verifies "the user" for scopes on the custom-UI path
// (startVerification, completeVerification) with a TOTP code, and returns
// the token the agent minted and now holds.
func (a *Agent) StepUp(ctx context.Context, scopes []string) (*stepup.TokenResult, error) {
	return a.StepUpWith(ctx, stepup.StartOptions{Scopes: scopes})
}

// StepUpWith is StepUp for a token with authorization details or a key
// (o.AuthorizationDetails, o.Cnf); o.Method is TOTP whatever it says.
func (a *Agent) StepUpWith(ctx context.Context, o stepup.StartOptions) (*stepup.TokenResult, error) {
	o.Method = api.TOTP
	ch, err := a.Client.StartVerificationWith(ctx, o)
	if err != nil {
		return nil, err
	}
	code, err := a.Code(ctx)
	if err != nil {
		return nil, err
	}
	return a.Client.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code})
}

// Code returns a TOTP code of an enrolled credential that the agent has
// not seen yet, waiting for the next time step when all are spent.
func (a *Agent) Code(ctx context.Context) (string, error) {
	for {
		a.mu.Lock()
		if len(a.creds) == 0 {
			a.mu.Unlock()
			return "", errors.New("stepuptest: no TOTP credential enrolled (call EnrollTOTP)")
		}
		now := time.Now()
		for _, c := range a.creds {
			if ctr, ok := nextStep(c.last, now); ok {
				c.last = ctr
				a.mu.Unlock()
				return oathtool(ctx, c.secret, ctr)
			}
		}
		a.mu.Unlock()
		next := time.Unix((now.Unix()/30+1)*30, 0).Add(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Until(next)):
		}
	}
}

// codeFor returns an unused code of c and marks its step used.
func (a *Agent) codeFor(ctx context.Context, c *totpCred) (string, error) {
	ctr, ok := nextStep(c.last, time.Now())
	if !ok {
		return "", errors.New("stepuptest: no unused time step")
	}
	c.last = ctr
	return oathtool(ctx, c.secret, ctr)
}

// nextStep picks the lowest time step after last that the agent accepts
// now (it accepts ±1 step). The step before the current one is left out
// within 3 seconds of the next step, when the agent's clock may already
// have moved on.
func nextStep(last uint64, now time.Time) (uint64, bool) {
	cur := uint64(now.Unix() / 30)
	lo := cur - 1
	if now.Unix()%30 >= 27 {
		lo = cur
	}
	for ctr := lo; ctr <= cur+1; ctr++ {
		if ctr > last {
			return ctr, true
		}
	}
	return 0, false
}

// oathtool computes the TOTP code of secret (base32) for time step ctr.
func oathtool(ctx context.Context, secret string, ctr uint64) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	at := "@" + strconv.FormatUint(ctr*30, 10)
	// The secret goes on stdin ("-"), not on the command line.
	cmd := exec.CommandContext(ctx, "oathtool", "--totp", "-b", "-N", at, "-")
	cmd.Stdin = strings.NewReader(secret + "\n")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("oathtool: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

type lockedBuffer = testenv.LockedBuffer
