package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/ptytest"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// startPTY runs a stepupctl command on a pseudo-terminal, as a person
// at a terminal would.
func startPTY(t *testing.T, env []string, args ...string) *ptytest.Session {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "stepupctl"), args...)
	cmd.Env = env
	return ptytest.Start(t, cmd)
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
	enroll.Expect(`Scan this QR code with your authenticator app:`)
	secret := enroll.Expect(`or enter this secret by hand: ([A-Z2-7]+)`)[1]
	enroll.Expect(`Code from the app: `)
	if !strings.ContainsAny(enroll.Screen(), "▀▄█") {
		t.Errorf("no QR code on the screen:\n%s", enroll.Screen())
	}
	enroll.Write("000000\n")
	enroll.Expect(`totp enrollment not confirmed: wrong, expired or already used code; try again\.`)
	enroll.Write(oathtool(t, secret, "now - 30 seconds") + "\n")
	enroll.Expect(`Enrolled totp credential totp-`)
	if err := enroll.Wait(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, enroll.Screen())
	}
	recoveryCode := enroll.Expect(`Keep them somewhere safe:\s+([0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4})\s`)[1]

	// Step-up: the agent cannot prompt (--prompter none), so stepupctl
	// asks on its terminal, without echo.
	code := oathtool(t, secret, "")
	p := startPTY(t, env, "prompt", "wallet:export")
	p.Expect(`stepup-agent: step up for wallet:export with totp\.`)
	p.Expect(`Enter the 6-digit code from your authenticator app\.`)
	p.Expect(`Code: `)
	p.AnswerSecret(code, `Stepped up with totp for wallet:export: single-use token`)
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

	// What stepupctl shows is what the agent's startVerification asks:
	// for a recovery code, its own label and hint; the code is not
	// echoed either.
	for m, want := range map[string]api.Ask{
		api.TOTP:         {Label: "Code:", Input: api.InputDigits, Field: "code", Hint: "Enter the 6-digit code from your authenticator app."},
		api.RecoveryCode: {Label: "Recovery code:", Input: api.InputCode, Field: "code", Hint: "Enter one of your unused recovery codes (each works once)."},
	} {
		ch, err := c.StartVerification(context.Background(), m, []string{"wallet:delegate"})
		if err != nil {
			t.Fatalf("startVerification %s: %v", m, err)
		}
		if ch.Ask != want {
			t.Fatalf("startVerification %s asks %+v, want %+v", m, ch.Ask, want)
		}
	}
	rc := startPTY(t, env, "prompt", "--method", "recovery_code", "wallet:delegate")
	rc.Expect(`stepup-agent: step up for wallet:delegate with recovery_code\.`)
	rc.Expect(`Enter one of your unused recovery codes \(each works once\)\.`)
	rc.Expect(`Recovery code: `)
	rc.AnswerSecret(recoveryCode, `Stepped up with recovery_code for wallet:delegate: multi-use token`)

	// Ctrl-D at the prompt cancels.
	p2 := startPTY(t, env, "prompt", "wallet:sign")
	p2.Expect(`Code: `)
	p2.Write("\x04")
	p2.Expect(`stepupctl: cancelled at the terminal`)
	if err := p2.Wait(); err == nil {
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
