package password

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// TestRunAgentWithGoAlone runs README's run command, scripts/run-agent.sh,
// in a copy of the tree with a PATH that holds Go and the shell's basic
// tools but no C compiler (a fresh machine): it builds, starts the agent,
// and both say that password is unavailable and why.
func TestRunAgentWithGoAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	root := testenv.RepoRoot(t)
	tree := t.TempDir()
	ls, err := exec.Command("git", "-C", root, "ls-files", "-z", "-co", "--exclude-standard").Output()
	if err != nil {
		testenv.Missing(t, "git ls-files: %v (the test copies the checkout)", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(ls), "\x00"), "\x00") {
		if f == "" {
			continue
		}
		src := filepath.Join(root, f)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or not a file
		}
		dst := filepath.Join(tree, f)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}

	// PATH: go and what the script itself runs, nothing else (no cc, gcc).
	path := t.TempDir()
	goExe, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	os.Symlink(goExe, filepath.Join(path, "go"))
	for _, p := range []string{"bash", "env", "uname", "mkdir", "rm", "dirname"} {
		full, err := exec.LookPath(p)
		if err != nil {
			t.Fatal(err)
		}
		os.Symlink(full, filepath.Join(path, p))
	}
	goenv := func(k string) string {
		out, _ := exec.Command("go", "env", k).Output()
		return strings.TrimSpace(string(out))
	}
	state := t.TempDir()
	sock := filepath.Join(state, "agent.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(tree, "scripts", "run-agent.sh"),
		"-a", sock, "--keychain", "memory", "--prompter", "none",
		"--policy", filepath.Join(state, "policy.yaml"), "--audit", filepath.Join(state, "audit.jsonl"))
	cmd.Env = []string{"PATH=" + path, "HOME=" + state, "XDG_RUNTIME_DIR=" + state,
		"XDG_STATE_HOME=" + state, "XDG_CONFIG_HOME=" + state,
		"GOCACHE=" + goenv("GOCACHE"), "GOMODCACHE=" + goenv("GOMODCACHE"), "GOPATH=" + goenv("GOPATH"),
		"GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local"}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("run-agent.sh exited:\n%s", out.String())
		case <-ctx.Done():
			t.Fatalf("no socket:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "password method unavailable") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	log := out.String()
	for _, want := range []string{"stepup-pam-helper not built (needs gcc and libpam0g-dev)", "password method unavailable", "libpam0g-dev"} {
		if !strings.Contains(log, want) {
			t.Fatalf("output lacks %q:\n%s", want, log)
		}
	}
	agent := filepath.Join(tree, "bin", "stepup-agent")
	f, err := os.Open(agent)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	if bytes.Contains(head[:n], []byte("/lib64/ld-linux")) || bytes.Contains(head[:n], []byte("ld-linux")) {
		t.Fatal("bin/stepup-agent has a dynamic loader: built with cgo")
	}
}
