package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// completionWorld starts a real agent (memory keychain, no prompter) with
// a policy naming deploy:prod and one enrolled TOTP credential, and
// returns the environment that points stepupctl at it and the
// credential's ID.
func completionWorld(t *testing.T) (env []string, credID string) {
	t.Helper()
	oathtool := testenv.Program(t, "oathtool")
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o700)
	cfg := filepath.Join(dir, "config")
	os.MkdirAll(filepath.Join(cfg, "stepup"), 0o700)
	pol := filepath.Join(cfg, "stepup", "policy.yaml")
	os.WriteFile(pol, []byte("scopes:\n  deploy:prod:\n    ttl: 2m\n  \"deploy:*\":\n    ttl: 5m\n"), 0o600)
	sock := filepath.Join(run, "stepup", "agent.sock")
	env = []string{"PATH=" + binDir + ":" + os.Getenv("PATH"), "HOME=" + dir, "XDG_RUNTIME_DIR=" + run,
		"XDG_CONFIG_HOME=" + cfg, "XDG_STATE_HOME=" + filepath.Join(dir, "state"), "STEPUP_AUTH_SOCK=" + sock,
		"TERM=dumb", "LC_ALL=C"}
	agent := exec.Command(filepath.Join(binDir, "stepup-agent"), "-D", "-a", sock, "--keychain", "memory",
		"--prompter", "none", "--policy", pol, "--audit", filepath.Join(dir, "audit.jsonl"))
	agent.Env = env
	var log bytes.Buffer
	agent.Stdout, agent.Stderr = &log, &log
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	if err := waitSock(sock, 10*time.Second); err != nil {
		t.Fatalf("agent: %v\n%s", err, log.String())
	}
	ctl := func(args ...string) []byte {
		t.Helper()
		c := exec.Command(filepath.Join(binDir, "stepupctl"), args...)
		c.Env = env
		out, err := c.Output()
		if err != nil {
			t.Fatalf("stepupctl %v: %v\n%s", args, err, out)
		}
		return out
	}
	waitTOTPWindow(5 * time.Second)
	var start struct{ EnrollmentID, Secret string }
	if err := json.Unmarshal(ctl("enroll", "totp", "--start", "--json", "--label", "work phone"), &start); err != nil {
		t.Fatal(err)
	}
	code, err := exec.Command(oathtool, "--totp", "-b", start.Secret).Output()
	if err != nil {
		t.Fatal(err)
	}
	ctl("enroll", "--finish", start.EnrollmentID, "--code", strings.TrimSpace(string(code)))
	var creds struct {
		Credentials []struct{ ID, Method string }
	}
	if err := json.Unmarshal(ctl("credentials", "--json"), &creds); err != nil {
		t.Fatal(err)
	}
	for _, c := range creds.Credentials {
		if c.Method == "totp" {
			credID = c.ID
		}
	}
	if credID == "" {
		t.Fatalf("no totp credential in %+v", creds)
	}
	return env, credID
}

// TestCompletionCallback asks stepupctl's completion entry point what the
// shells ask it: scope names from the policy (patterns left out), and the
// agent's credential IDs with their method and label.
func TestCompletionCallback(t *testing.T) {
	env, credID := completionWorld(t)
	complete := func(args ...string) string {
		c := exec.Command(filepath.Join(binDir, "stepupctl"), append([]string{"__complete"}, args...)...)
		c.Env = env
		out, err := c.Output()
		if err != nil {
			t.Fatalf("__complete %v: %v", args, err)
		}
		return string(out)
	}
	out := complete("check", "")
	for _, want := range []string{"deploy:prod\n", "wallet:export\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("check completions lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "deploy:*") {
		t.Errorf("a pattern is offered as a scope:\n%s", out)
	}
	if out := complete("prompt", "deploy:prod", ""); strings.Contains(out, "deploy:prod\n") {
		t.Errorf("prompt offers a scope already given:\n%s", out)
	}
	if out := complete("exec", "--scope", "dep"); !strings.Contains(out, "deploy:prod") {
		t.Errorf("exec --scope completions lack deploy:prod:\n%s", out)
	}
	if out := complete("credentials", "remove", ""); !strings.Contains(out, credID+"\ttotp work phone\n") {
		t.Errorf("credentials remove completions lack %s:\n%s", credID, out)
	}
	if out := complete("enroll", ""); !strings.Contains(out, "totp\n") {
		t.Errorf("enroll completions lack totp:\n%s", out)
	}
}

// TestBashCompletionOnPty types into an interactive bash on a pty, with
// the script `stepupctl completion bash` writes sourced, and reads back
// what Tab put on the line: a scope from the policy and a credential ID
// from the agent.
func TestBashCompletionOnPty(t *testing.T) {
	bash := testenv.Program(t, "bash")
	env, credID := completionWorld(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "stepupctl.bash")
	gen := exec.Command(filepath.Join(binDir, "stepupctl"), "completion", "bash")
	gen.Env = env
	out, err := gen.Output()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(script, out, 0o600)
	// As a Debian user has it: bash-completion loaded, then the script the
	// package installs into /usr/share/bash-completion/completions.
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		testenv.Missing(t, "%s (Debian package bash-completion)", bashCompletion)
	}
	rc := filepath.Join(dir, "bashrc")
	os.WriteFile(rc, []byte("PS1='$ '\nbind 'set show-all-if-ambiguous on'\nsource "+bashCompletion+"\nsource "+script+"\n"), 0o600)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "--noprofile", "--rcfile", rc, "-i")
	cmd.Env = env
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { f.Close(); cmd.Process.Kill(); cmd.Wait() }()
	var mu sync.Mutex
	var screen bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	expect := func(what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := screen.String()
			mu.Unlock()
			if strings.Contains(got, what) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the terminal never showed %q:\n%q", what, screen.String())
	}
	clear := func() { mu.Lock(); screen.Reset(); mu.Unlock() }
	expect("$ ")

	// One candidate: Tab completes the word in place.
	clear()
	f.Write([]byte("stepupctl check depl\t"))
	expect("stepupctl check deploy:prod ")
	f.Write([]byte("\x15")) // ^U: clear the line

	clear()
	f.Write([]byte("stepupctl credentials remove tot\t"))
	expect("stepupctl credentials remove " + credID)
	f.Write([]byte("\x15"))

	// Several: Tab lists them.
	clear()
	f.Write([]byte("stepupctl check wallet:ex\t"))
	expect("wallet:export")
	f.Write([]byte("\x15exit\n"))
}
