//go:build linux

package main

// End-to-end tests of the prompt routing (docs/prompts.md): the real
// stepup-agent with --prompter auto, the real stepupctl, real pinentry
// programs, a TOTP code from oathtool. The agent has no display of its
// own, so where each prompt opens depends only on the requester.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/ptytest"
	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/creack/pty"
	xunix "golang.org/x/sys/unix"
)

type peAgent struct {
	t      *testing.T
	dir    string
	sock   string
	cmd    *exec.Cmd
	log    string
	env    []string // for clients
	disp   string
	secret string
}

// peBaseEnv is this process's environment without anything that says
// where a prompt goes.
func peBaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DISPLAY", "WAYLAND_DISPLAY", "STEPUP_TTY", "GPG_TTY", "STEPUP_AUTH_SOCK", "STEPUP_PINENTRY", "STEPUP_PINENTRY_TTY", "TERM", "LANG", "LC_ALL", "LC_CTYPE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// run starts the agent with args and env (stepup-agent -D -a a.sock
// ARGS...), logging to a.log, stops it with SIGTERM at the end of the test
// (and shows its log, with moreLog's, when the test failed), and waits for
// its socket.
func (a *peAgent) run(env []string, moreLog func() string, args ...string) {
	t := a.t
	t.Helper()
	logf, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	a.cmd = exec.Command(filepath.Join(binDir, "stepup-agent"), append([]string{"-D", "-a", a.sock}, args...)...)
	a.cmd.Env = env
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { a.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			a.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(a.log)
			more := ""
			if moreLog != nil {
				more = moreLog()
			}
			t.Logf("agent log:\n%s%s", b, more)
		}
	})
	if err := waitSock(a.sock, 10*time.Second); err != nil {
		t.Fatalf("agent did not start: %v", err)
	}
}

// startPromptAgent starts an agent with --prompter auto and a TOTP
// credential enrolled.
func startPromptAgent(t *testing.T) *peAgent {
	t.Helper()
	for _, p := range []string{"oathtool", "pinentry-tty", "pinentry-gtk-2", "xdotool"} {
		requireProgram(t, p)
	}
	dir, err := os.MkdirTemp("", "pe") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &peAgent{t: t, dir: dir, sock: filepath.Join(dir, "run", "agent.sock"), log: filepath.Join(dir, "agent.log"), disp: testenv.XDisplay(t)}
	os.Mkdir(filepath.Join(dir, "run"), 0o700)
	base := append(peBaseEnv(),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"HOME="+dir,
	)
	a.env = append(append([]string{}, base...), "STEPUP_AUTH_SOCK="+a.sock)
	a.run(append(append([]string{}, base...), "STEPUP_PINENTRY=pinentry-gtk-2", "STEPUP_PINENTRY_TTY=pinentry-tty"), nil,
		"--keychain", "memory", "--prompter", "auto")
	a.enroll()
	return a
}

func (a *peAgent) ctl(args ...string) string {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(binDir, "stepupctl"), args...)
	c.Env = a.env
	// stdout only: warnings on stderr (enroll's about a memory keychain)
	// must not break the JSON callers parse.
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		a.t.Fatalf("stepupctl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// totp returns the code for now+offset steps, as oathtool computes it.
func (a *peAgent) totp(offset int) string {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "oathtool", "--totp", "-b", "-N", fmt.Sprintf("now %+d seconds", 30*offset), a.secret).Output()
	if err != nil {
		a.t.Fatalf("oathtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func (a *peAgent) enroll() {
	a.t.Helper()
	// Keep clear of a step boundary: the enrollment takes the previous
	// step's code and the prompt the current one.
	if s := time.Now().Unix() % 30; s > 22 {
		time.Sleep(time.Duration(31-s) * time.Second)
	}
	var start struct {
		Secret       string `json:"secret"`
		EnrollmentID string `json:"enrollmentId"`
	}
	if err := json.Unmarshal([]byte(a.ctl("enroll", "totp", "--start", "--json")), &start); err != nil || start.Secret == "" {
		a.t.Fatalf("enroll --start: %v", err)
	}
	a.secret = start.Secret
	a.ctl("enroll", "--finish", start.EnrollmentID, "--code", a.totp(-1))
}

// pinentries lists the agent's pinentry children.
func (a *peAgent) pinentries() []int {
	return testenv.Children(a.cmd.Process.Pid, "pinentry", false)
}

func (a *peAgent) waitPinentry() int {
	a.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p := a.pinentries(); len(p) > 0 {
			return p[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatal("no pinentry appeared")
	return 0
}

func (a *peAgent) waitNoPinentry() {
	a.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(a.pinentries()) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("pinentry still running: %v", a.pinentries())
}

// waitReaped waits until process pid is gone from /proc: the pinentry
// list leaves zombies out, and the agent reaps its pinentry (and then
// restores the terminal) a moment after it exits.
func waitReaped(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pinentry %d still exists", pid)
		}
	}
}

func (a *peAgent) xdo(args ...string) string {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "xdotool", args...)
	c.Env = append(os.Environ(), "DISPLAY="+a.disp)
	out, err := c.CombinedOutput()
	if err != nil {
		a.t.Fatalf("xdotool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// promptWindows lists the visible prompt windows on the test display.
func (a *peAgent) promptWindows() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "xdotool", "search", "--onlyvisible", "--name", "^stepup-agent$")
	c.Env = append(os.Environ(), "DISPLAY="+a.disp)
	out, _ := c.Output()
	return strings.Fields(string(out))
}

// answerGUI types code into the prompt window and presses Return.
func (a *peAgent) answerGUI(code string) {
	a.t.Helper()
	ids := strings.Fields(a.xdo("search", "--sync", "--onlyvisible", "--name", "^stepup-agent$"))
	win := ids[len(ids)-1]
	a.xdo("windowfocus", "--sync", win)
	a.xdo("type", "--delay", "30", code)
	a.xdo("key", "Return")
}

// ptyClient is stepupctl (or ssh) on a terminal of its own.
type ptyClient struct {
	cmd    *exec.Cmd
	master *os.File
	out    *ptytest.Screen
	done   chan error // the command's exit, once what it printed last is read
}

// startPTYClient starts c on a new terminal cols wide and collects what it
// prints; the test's end kills it.
func startPTYClient(t testing.TB, c *exec.Cmd, cols uint16) *ptyClient {
	t.Helper()
	m, err := pty.StartWithSize(c, &pty.Winsize{Rows: 24, Cols: cols})
	if err != nil {
		t.Fatal(err)
	}
	p := &ptyClient{cmd: c, master: m, out: ptytest.Collect(m), done: make(chan error, 1)}
	go func() {
		err := c.Wait()
		select { // let the reader drain what the client printed last
		case <-p.out.Done():
		case <-time.After(2 * time.Second):
		}
		p.done <- err
	}()
	t.Cleanup(func() {
		c.Process.Kill()
		m.Close()
	})
	return p
}

func (a *peAgent) startOnTTY(env []string, args ...string) *ptyClient {
	a.t.Helper()
	c := exec.Command(filepath.Join(binDir, "stepupctl"), args...)
	c.Env = append(append([]string{}, a.env...), env...)
	return startPTYClient(a.t, c, 100)
}

func (p *ptyClient) screen() string { return p.out.String() }

func (p *ptyClient) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(p.screen(), want) {
			return
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("the terminal never showed %q:\n%s", want, p.screen())
}

func (p *ptyClient) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("stepupctl did not finish:\n%s", p.screen())
	}
	return nil
}

func (p *ptyClient) cooked(t *testing.T) bool {
	st, err := xunix.IoctlGetTermios(int(p.master.Fd()), xunix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return st.Lflag&xunix.ICANON != 0 && st.Lflag&xunix.ECHO != 0
}

func wantToken(t *testing.T, out string) {
	t.Helper()
	i := strings.Index(out, "{")
	if i < 0 {
		t.Fatalf("no JSON in output:\n%s", out)
	}
	var res struct {
		Token  string   `json:"token"`
		Scopes []string `json:"scopes"`
		Method string   `json:"method"`
	}
	if err := json.NewDecoder(strings.NewReader(out[i:])).Decode(&res); err != nil {
		t.Fatalf("output: %v\n%s", err, out)
	}
	if !strings.HasPrefix(res.Token, "eyJ") || res.Method != "totp" || len(res.Scopes) != 1 || res.Scopes[0] != "wallet:export" {
		t.Fatalf("token result: %+v", res)
	}
}

// stepupctl on a terminal with no display: the prompt opens in that
// terminal (pinentry-tty on its tty), and the token comes back.
func TestPromptE2ETerminal(t *testing.T) {
	a := startPromptAgent(t)
	c := a.startOnTTY([]string{"TERM=xterm", "LANG=C.UTF-8"}, "prompt", "--json", "--reason", "e2e über tty", "wallet:export")
	c.waitFor(t, "Ctrl-D cancels.")
	for _, want := range []string{"wallet:export", "e2e über tty", "stepupctl", "Code:"} {
		c.waitFor(t, want)
	}
	if len(a.promptWindows()) != 0 {
		t.Fatal("a GUI prompt opened for a terminal request")
	}
	c.master.Write([]byte(a.totp(0) + "\r"))
	if err := c.wait(t); err != nil {
		t.Fatalf("stepupctl: %v\n%s", err, c.screen())
	}
	wantToken(t, c.screen())
	a.waitNoPinentry()
}

// The same from a terminal on the desktop (DISPLAY set): the GUI prompt.
func TestPromptE2EDisplay(t *testing.T) {
	a := startPromptAgent(t)
	c := a.startOnTTY([]string{"TERM=xterm", "LANG=C.UTF-8", "DISPLAY=" + a.disp}, "prompt", "--json", "wallet:export")
	a.waitPinentry()
	a.answerGUI(a.totp(0))
	if err := c.wait(t); err != nil {
		t.Fatalf("stepupctl: %v\n%s", err, c.screen())
	}
	if strings.Contains(c.screen(), "Ctrl-D cancels") {
		t.Fatal("the prompt also opened in the terminal")
	}
	wantToken(t, c.screen())
}

// Two clients asking at once (programs with DISPLAY, no terminal) see one
// prompt, and both get the token.
func TestPromptE2EConcurrentShareOnePrompt(t *testing.T) {
	a := startPromptAgent(t)
	type result struct {
		out []byte
		err error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			c := exec.CommandContext(ctx, filepath.Join(binDir, "stepupctl"), "prompt", "--json", "wallet:export")
			c.Env = append(append([]string{}, a.env...), "DISPLAY="+a.disp)
			out, err := c.Output()
			results <- result{out, err}
		}()
	}
	a.waitPinentry()
	time.Sleep(1500 * time.Millisecond) // give the second request time to arrive
	if p := a.pinentries(); len(p) != 1 {
		t.Fatalf("%d pinentry processes for one scope", len(p))
	}
	if w := a.promptWindows(); len(w) != 1 {
		t.Fatalf("%d prompt windows for one scope", len(w))
	}
	a.answerGUI(a.totp(0))
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("stepupctl: %v\n%s", r.err, r.out)
		}
		wantToken(t, string(r.out))
	}
}

// A client that disconnects while its prompt is up: the prompt closes and
// the pinentry process is gone; on a terminal, the terminal is usable.
func TestPromptE2EClientHangsUp(t *testing.T) {
	t.Run("display", func(t *testing.T) {
		a := startPromptAgent(t)
		c := exec.Command(filepath.Join(binDir, "stepupctl"), "prompt", "wallet:export")
		c.Env = append(append([]string{}, a.env...), "DISPLAY="+a.disp)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		pid := a.waitPinentry()
		a.xdo("search", "--sync", "--onlyvisible", "--name", "^stepup-agent$")
		c.Process.Kill()
		c.Wait()
		a.waitNoPinentry()
		waitReaped(t, pid)
		if w := a.promptWindows(); len(w) != 0 {
			t.Fatalf("prompt windows left: %v", w)
		}
	})
	t.Run("terminal", func(t *testing.T) {
		a := startPromptAgent(t)
		c := a.startOnTTY([]string{"TERM=xterm", "LANG=C.UTF-8"}, "prompt", "wallet:export")
		c.waitFor(t, "Ctrl-D cancels.")
		pid := a.waitPinentry()
		if c.cooked(t) {
			t.Fatal("the terminal should be raw while pinentry-tty reads")
		}
		c.cmd.Process.Kill()
		a.waitNoPinentry()
		waitReaped(t, pid)
		// The agent puts the terminal back right after it reaps the
		// pinentry (prompt/pinentry.go).
		for deadline := time.Now().Add(5 * time.Second); !c.cooked(t); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the terminal was left without echo")
			}
		}
	})
}

// A program with neither a terminal nor a display, and an agent with no
// display of its own: no_prompter at once, with a hint saying what to
// configure, and no prompt program started.
func TestPromptE2ENoPrompter(t *testing.T) {
	a := startPromptAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, filepath.Join(binDir, "stepupctl"), "prompt", "wallet:export")
	c.Env = a.env
	start := time.Now()
	out, err := c.CombinedOutput()
	if err == nil {
		t.Fatalf("stepupctl prompt succeeded without a way to prompt:\n%s", out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("no_prompter took %v", d)
	}
	for _, want := range []string{"no way to show a prompt", "the request carried no terminal", "no display of its own", "import-environment", "docs/prompts.md"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if p := a.pinentries(); len(p) != 0 {
		t.Fatalf("pinentry started: %v", p)
	}
}
