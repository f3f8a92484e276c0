package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// TestMemoryClosedToSameUser is the attack of issue 11 item 14: another
// process of the agent's own uid opens /proc/PID/mem (where a token and a
// TOTP secret were found). The agent and the attacker both run as one
// unprivileged uid (nobody when the tests run as root), so neither has
// CAP_SYS_PTRACE. A plain process of that uid is the control: its memory
// is open to the attacker, so the test fails without harden().
func TestMemoryClosedToSameUser(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	dir, err := os.MkdirTemp("", "stepup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "stepup-agent")
	copyFile(t, stepuptest.Build(t, "stepup-agent"), bin)
	var prefix []string
	if os.Getuid() == 0 {
		prefix = []string{testenv.Program(t, "setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", "--"}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o700)
	if os.Getuid() == 0 {
		os.Chown(home, 65534, 65534)
	}
	command := func(args ...string) *exec.Cmd {
		argv := append(append([]string{}, prefix...), args...)
		c := exec.Command(argv[0], argv[1:]...)
		c.Env = []string{"HOME=" + home, "XDG_RUNTIME_DIR=" + home, "XDG_STATE_HOME=" + home, "XDG_CONFIG_HOME=" + home, "PATH=/usr/bin:/bin"}
		return c
	}
	start := func(args ...string) *exec.Cmd {
		c := command(args...)
		var log strings.Builder
		c.Stdout, c.Stderr = io.Discard, &log
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	sock := filepath.Join(home, "agent.sock")
	agent := start(bin, "-D", "-a", sock, "--keychain", "memory", "--prompter", "none",
		"--policy", filepath.Join(home, "none.yaml"), "--audit", filepath.Join(home, "audit.jsonl"))
	waitFor(t, sock)
	control := start("sleep", "60")
	time.Sleep(100 * time.Millisecond)

	openMem := func(pid int) error {
		out, err := command("sh", "-c", fmt.Sprintf("exec 3</proc/%d/mem && echo opened", pid)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := openMem(control.Process.Pid); err != nil {
		t.Fatalf("control: a process of the same uid cannot open a plain process's /proc/PID/mem here (%v); the test proves nothing", err)
	}
	if err := openMem(agent.Process.Pid); err == nil {
		t.Fatalf("another process of the agent's uid opened /proc/%d/mem", agent.Process.Pid)
	} else if !strings.Contains(err.Error(), "ermission denied") {
		t.Fatalf("opening the agent's memory failed, but not for want of permission: %v", err)
	}
	// No core file either: a crash must not write the agent's memory to
	// disk (RLIMIT_CORE 0, soft and hard, so no child can raise it).
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", agent.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	core := regexp.MustCompile(`(?m)^Max core file size\s+(\S+)\s+(\S+)`).FindStringSubmatch(string(limits))
	if core == nil || core[1] != "0" || core[2] != "0" {
		t.Fatalf("the agent's core file limit is %q, want 0 0:\n%s", core, limits)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, sock string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the agent did not listen on %s", sock)
}
