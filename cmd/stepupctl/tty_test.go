package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// ptySession runs a stepupctl command on a pseudo-terminal, as a person
// at a terminal would.
type ptySession struct {
	t   *testing.T
	f   *os.File
	cmd *exec.Cmd
	mu  sync.Mutex
	out bytes.Buffer
}

func startPTY(t *testing.T, env []string, args ...string) *ptySession {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "stepupctl"), args...)
	cmd.Env = env
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 60, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	s := &ptySession{t: t, f: f, cmd: cmd}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); f.Close() })
	return s
}

// expect waits until the screen matches re and returns the submatches.
func (s *ptySession) expect(re string) []string {
	s.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		m := rx.FindStringSubmatch(s.out.String())
		s.mu.Unlock()
		if m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("screen never matched %q; it shows:\n%s", re, s.screen())
	return nil
}

func (s *ptySession) screen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

func (s *ptySession) wait() error {
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		s.t.Fatalf("stepupctl did not exit; screen:\n%s", s.screen())
		return nil
	}
}

func oathtool(t *testing.T, secret, offset string) string {
	t.Helper()
	args := []string{"--totp", "-b", secret}
	if offset != "" {
		args = append([]string{"-N", offset}, args...)
	}
	out, err := exec.Command("oathtool", args...).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// TestTerminalFallback: with an agent that cannot prompt, stepupctl
// enrolls and steps up on its own terminal: the QR code and secret are
// shown, the code is read without echo, and the token is minted through
// startVerification/completeVerification.
func TestTerminalFallback(t *testing.T) {
	requireProgram(t, "oathtool")
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o700)
	sock := filepath.Join(run, "stepup", "agent.sock")
	agent := exec.Command(filepath.Join(binDir, "stepup-agent"), "-D", "-a", sock, "--keychain", "memory", "--prompter", "none",
		"--policy", filepath.Join(dir, "none.yaml"), "--audit", filepath.Join(dir, "audit.jsonl"))
	agent.Stderr = io.Discard
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	if err := waitSock(sock, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TERM=xterm", "STEPUP_AUTH_SOCK=" + sock}
	waitTOTPWindow(8 * time.Second)

	// Enrollment on the terminal: QR code, secret, code typed back.
	enroll := startPTY(t, env, "enroll", "totp")
	enroll.expect(`Scan this QR code with your authenticator app:`)
	secret := enroll.expect(`or enter this secret by hand: ([A-Z2-7]+)`)[1]
	enroll.expect(`Code from the app: `)
	if !strings.ContainsAny(enroll.screen(), "▀▄█") {
		t.Errorf("no QR code on the screen:\n%s", enroll.screen())
	}
	enroll.f.Write([]byte("000000\n"))
	enroll.expect(`totp enrollment not confirmed: wrong, expired or already used code; try again\.`)
	enroll.f.Write([]byte(oathtool(t, secret, "now - 30 seconds") + "\n"))
	enroll.expect(`Enrolled totp credential totp-`)
	if err := enroll.wait(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, enroll.screen())
	}

	// Step-up: the agent cannot prompt (--prompter none), so stepupctl
	// asks on its terminal, without echo.
	code := oathtool(t, secret, "")
	p := startPTY(t, env, "prompt", "wallet:export")
	p.expect(`stepup-agent: step up for wallet:export with totp\.`)
	p.expect(`Code: `)
	p.f.Write([]byte(code + "\n"))
	p.expect(`Stepped up with totp for wallet:export: single-use token`)
	if err := p.wait(); err != nil {
		t.Fatalf("prompt: %v\n%s", err, p.screen())
	}
	if strings.Contains(p.screen(), code) {
		t.Fatalf("the code was echoed:\n%s", p.screen())
	}
	// The token is bound to stepupctl in that terminal (bind: client):
	// this test program, another client, is not handed it, and status
	// says whom it is bound to.
	c := &stepup.Client{Socket: sock}
	if !c.IsStepUpRequired(context.Background(), "wallet:export") {
		t.Fatal("the token of stepupctl in its terminal was handed to another program")
	}
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tokens) != 1 || st.Tokens[0].Scope != "wallet:export" || !strings.Contains(st.Tokens[0].BoundTo, "stepupctl in terminal pts/") {
		t.Fatalf("no token bound to stepupctl in its terminal after the terminal step-up: %+v", st.Tokens)
	}

	// Ctrl-D at the prompt cancels.
	p2 := startPTY(t, env, "prompt", "wallet:sign")
	p2.expect(`Code: `)
	p2.f.Write([]byte{4})
	p2.expect(`stepupctl: cancelled at the terminal`)
	if err := p2.wait(); err == nil {
		t.Fatal("a cancelled prompt exited 0")
	}
}

// waitTOTPWindow waits, if need be, until at least d is left in the
// current 30-second TOTP step.
func waitTOTPWindow(d time.Duration) {
	left := 30*time.Second - time.Duration(time.Now().UnixNano()%int64(30*time.Second))
	if left < d {
		time.Sleep(left + 100*time.Millisecond)
	}
}
