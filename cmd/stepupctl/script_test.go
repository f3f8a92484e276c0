package main

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/rogpeppe/go-internal/testscript"
)

// binDir holds the real binaries the scripts run, built once.
var binDir string

func TestMain(m *testing.M) {
	// The agent refuses a group-writable policy file or directory: under
	// a umask of 002 (Debian's per-user groups) the scripts' files would
	// be. The scripts make them as a umask of 022 does.
	syscall.Umask(0o022)
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "stepup-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		defer testenv.StopX()
		os.Chmod(dir, 0o755) // scripts run a client as nobody
		for _, c := range []string{"stepup-agent", "stepupctl", "stepupctl-inspect"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../"+c)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "building %s: %v\n", c, err)
				return 1
			}
		}
		binDir = dir
		return m.Run()
	}())
}

// requireProgram fails in CI (or with STEPUP_TEST_REQUIRE_ALL) and skips
// elsewhere when a program the test needs is missing.
func requireProgram(t testing.TB, name string) {
	t.Helper()
	testenv.Program(t, name)
}

// setupScriptEnv gives a script the real binaries on PATH and a private
// world in $WORK: XDG directories, HOME, and the agent's socket in $SOCK
// and $STEPUP_AUTH_SOCK; no display and no session bus.
func setupScriptEnv(e *testscript.Env) error {
	e.Setenv("PATH", binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	run := filepath.Join(e.WorkDir, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		return err
	}
	e.Setenv("XDG_RUNTIME_DIR", run)
	e.Setenv("XDG_STATE_HOME", filepath.Join(e.WorkDir, "state"))
	e.Setenv("XDG_CONFIG_HOME", filepath.Join(e.WorkDir, "config"))
	e.Setenv("HOME", filepath.Join(e.WorkDir, "home"))
	e.Setenv("SOCK", filepath.Join(run, "stepup", "agent.sock"))
	e.Setenv("STEPUP_AUTH_SOCK", filepath.Join(run, "stepup", "agent.sock"))
	e.Setenv("UID", fmt.Sprint(os.Getuid()))
	e.Setenv("BIN", binDir) // the binaries alone, for a PATH without other programs
	for _, v := range []string{"DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"} {
		e.Setenv(v, "")
	}
	e.Defer(func() { checkAuditLogs(e.T(), e.WorkDir) })
	return nil
}

func TestScripts(t *testing.T) {
	for _, p := range []string{"oathtool", "socat", "setpriv"} {
		requireProgram(t, p)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup:               setupScriptEnv,
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Getuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"agent":      cmdAgent,
			"waitsock":   cmdWaitSock,
			"envfrom":    cmdEnvFrom,
			"forge":      cmdForge,
			"sleep":      cmdSleep,
			"pipeline":   cmdPipeline,
			"mode":       cmdMode,
			"rpc":        cmdRPC,
			"stalesock":  cmdStaleSock,
			"totpwindow": cmdTOTPWindow,
			"retry":      cmdRetry,
			"rc":         cmdRC,
		},
	})
}

var (
	agentsMu sync.Mutex
	agents   = map[*testscript.TestScript]*exec.Cmd{}
)

// agent start [ARGS...] | stop | hup | kill9 | wait
//
// start runs stepup-agent -D on $SOCK with an in-memory keychain, no
// prompter, the policy $WORK/policy.yaml and the audit log
// $WORK/audit.jsonl (ARGS are added or override), logging to
// $WORK/agent.log, and waits until the socket answers.
func cmdAgent(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: agent start|stop|hup|kill9")
	}
	agentsMu.Lock()
	cmd := agents[ts]
	agentsMu.Unlock()
	switch args[0] {
	case "start":
		if cmd != nil {
			ts.Fatalf("an agent is already running")
		}
		work := ts.Getenv("WORK")
		argv := []string{"-D", "-a", ts.Getenv("SOCK"), "--keychain", "memory", "--prompter", "none",
			"--policy", filepath.Join(work, "policy.yaml"), "--audit", filepath.Join(work, "audit.jsonl")}
		argv = append(argv, args[1:]...)
		logf, err := os.OpenFile(filepath.Join(work, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		ts.Check(err)
		c := exec.Command(filepath.Join(binDir, "stepup-agent"), argv...)
		c.Dir = work
		c.Env = scriptEnv(ts)
		c.Stdout, c.Stderr = logf, logf
		ts.Check(c.Start())
		logf.Close()
		agentsMu.Lock()
		agents[ts] = c
		agentsMu.Unlock()
		ts.Defer(func() {
			c.Process.Kill()
			c.Wait()
			agentsMu.Lock()
			delete(agents, ts)
			agentsMu.Unlock()
		})
		ts.Setenv("AGENT_PID", fmt.Sprint(c.Process.Pid))
		if err := waitSock(ts.Getenv("SOCK"), 10*time.Second); err != nil {
			if neg {
				return
			}
			ts.Fatalf("agent did not start: %v\n%s", err, ts.ReadFile(filepath.Join(work, "agent.log")))
		}
		if neg {
			ts.Fatalf("agent started unexpectedly")
		}
	case "stop", "hup", "kill9":
		if cmd == nil {
			ts.Fatalf("no agent running")
		}
		sig := map[string]syscall.Signal{"stop": syscall.SIGTERM, "hup": syscall.SIGHUP, "kill9": syscall.SIGKILL}[args[0]]
		ts.Check(cmd.Process.Signal(sig))
		if args[0] == "hup" {
			return
		}
		err := cmd.Wait()
		agentsMu.Lock()
		delete(agents, ts)
		agentsMu.Unlock()
		if args[0] == "stop" && err != nil && !neg {
			ts.Fatalf("agent exited with %v", err)
		}
	default:
		ts.Fatalf("unknown agent command %q", args[0])
	}
}

func scriptEnv(ts *testscript.TestScript) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "TMPDIR", "WORK"} {
		env = append(env, k+"="+ts.Getenv(k))
	}
	return env
}

func waitSock(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitsock PATH: wait until a socket accepts connections.
func cmdWaitSock(ts *testscript.TestScript, neg bool, args []string) {
	err := waitSock(ts.MkAbs(args[0]), 5*time.Second)
	if (err == nil) == neg {
		ts.Fatalf("waitsock %s: %v", args[0], err)
	}
}

// envfrom VAR FILE [KEY]: set VAR to FILE's trimmed content, or to the
// string member KEY of the JSON object in FILE (FILE may be stdout).
func cmdEnvFrom(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: envfrom VAR FILE [KEY]")
	}
	data := ts.ReadFile(args[1])
	val := strings.TrimSpace(data)
	if len(args) == 3 {
		var m map[string]any
		ts.Check(json.Unmarshal([]byte(data), &m))
		v, ok := m[args[2]]
		if !ok {
			ts.Fatalf("%s has no member %q", args[1], args[2])
		}
		val = fmt.Sprint(v)
	}
	ts.Setenv(args[0], val)
}

// forge MODE TOKEN OUTFILE: write a forged variant of TOKEN.
//
//	flip    the signature with one bit flipped
//	resign  the same header and claims signed by another Ed25519 key
//	none    alg "none" and no signature
//	scope   the claims' scope changed, the original signature kept
func cmdForge(ts *testscript.TestScript, neg bool, args []string) {
	mode, tok := args[0], args[1]
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		ts.Fatalf("not a JWT")
	}
	var out string
	switch mode {
	case "flip":
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		ts.Check(err)
		sig[len(sig)/2] ^= 1
		out = parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	case "resign":
		hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
		var h map[string]any
		ts.Check(json.Unmarshal(hdr, &h))
		var claims map[string]any
		body, _ := base64.RawURLEncoding.DecodeString(parts[1])
		ts.Check(json.Unmarshal(body, &claims))
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: other},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", h["kid"]))
		ts.Check(err)
		out, err = jwt.Signed(s).Claims(claims).Serialize()
		ts.Check(err)
	case "none":
		hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		out = hdr + "." + parts[1] + "."
	case "scope":
		body, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var claims map[string]any
		ts.Check(json.Unmarshal(body, &claims))
		claims["scope"] = "wallet:export wallet:delete"
		nb, _ := json.Marshal(claims)
		out = parts[0] + "." + base64.RawURLEncoding.EncodeToString(nb) + "." + parts[2]
	default:
		ts.Fatalf("unknown forge mode %q", mode)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), []byte(out), 0o600))
}

func cmdSleep(ts *testscript.TestScript, neg bool, args []string) {
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	time.Sleep(d)
}

// mode PATH PERM: check a file's permission bits (e.g. 0600).
func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	fi, err := os.Lstat(ts.MkAbs(args[0]))
	ts.Check(err)
	got := fmt.Sprintf("%04o", fi.Mode().Perm())
	if (got == args[1]) == neg {
		ts.Fatalf("%s has mode %s, want %s%s", args[0], got, map[bool]string{true: "not ", false: ""}[neg], args[1])
	}
}

// pipeline N: send N isStepUpRequired requests on one connection without
// waiting, then read N answers and check every id came back once.
func cmdPipeline(ts *testscript.TestScript, neg bool, args []string) {
	var n int
	fmt.Sscan(args[0], &n)
	c, err := net.Dial("unix", ts.Getenv("SOCK"))
	ts.Check(err)
	defer c.Close()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"isStepUpRequired","params":{"scope":"wallet:%d"}}`+"\n", i, i%7)
	}
	go c.Write([]byte(b.String()))
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	seen := map[int]bool{}
	for i := 0; i < n; i++ {
		line, err := r.ReadBytes('\n')
		ts.Check(err)
		var resp struct {
			ID     int `json:"id"`
			Result struct {
				Required bool   `json:"required"`
				Scope    string `json:"scope"`
			} `json:"result"`
		}
		ts.Check(json.Unmarshal(line, &resp))
		if seen[resp.ID] || resp.Result.Scope != fmt.Sprintf("wallet:%d", resp.ID%7) {
			ts.Fatalf("bad answer %s", line)
		}
		seen[resp.ID] = true
	}
	fmt.Fprintf(ts.Stdout(), "%d answers\n", len(seen))
}

// rpc FILE N: send FILE's lines on one connection and print the N
// answers expected, waiting up to 5s for them.
func cmdRPC(ts *testscript.TestScript, neg bool, args []string) {
	data := ts.ReadFile(args[0])
	c, err := net.Dial("unix", ts.Getenv("SOCK"))
	ts.Check(err)
	defer c.Close()
	var want int
	fmt.Sscan(args[1], &want)
	_, err = c.Write([]byte(data))
	ts.Check(err)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for i := 0; i < want; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			fmt.Fprintf(ts.Stdout(), "read error: %v\n", err)
			return
		}
		fmt.Fprint(ts.Stdout(), line)
	}
}

// stalesock PATH: leave a socket file behind that nobody listens on, as
// an agent killed with SIGKILL does.
func cmdStaleSock(ts *testscript.TestScript, neg bool, args []string) {
	ln, err := net.Listen("unix", ts.MkAbs(args[0]))
	ts.Check(err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
}

// totpwindow D: wait, if need be, until at least D is left in the current
// 30-second TOTP step, so that a script's codes stay in their steps.
func cmdTOTPWindow(ts *testscript.TestScript, neg bool, args []string) {
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	waitTOTPWindow(d)
}

// retry D [!] CMD ARGS...: run CMD until it succeeds (or, with !, fails)
// within D; its last output is the script's stdout and stderr.
func cmdRetry(ts *testscript.TestScript, neg bool, args []string) {
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	args = args[1:]
	wantFail := len(args) > 0 && args[0] == "!"
	if wantFail {
		args = args[1:]
	}
	deadline := time.Now().Add(d)
	for {
		err := ts.Exec(args[0], args[1:]...)
		if (err != nil) == wantFail {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("retry %s: %v still %v", d, args, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rc N CMD [ARGS...] runs CMD like exec and requires exit status N
// (DESIGN.md's table); stdout and stderr are kept for the next lines.
func cmdRC(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: rc N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", strings.Join(args[1:], " "), got, want)
	}
}
