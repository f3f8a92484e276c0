package stepup

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// envFakeAgent makes the test binary a fake agent listening on the path it
// names: it answers every request with an empty result.
const envFakeAgent = "STEPUP_TEST_FAKE_AGENT"

func TestMain(m *testing.M) {
	if path := os.Getenv(envFakeAgent); path != "" {
		fakeAgent(path)
		return
	}
	os.Exit(m.Run())
}

func fakeAgent(path string) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.WriteString("ready\n")
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(0)
		}
		go func() {
			defer c.Close()
			s := bufio.NewScanner(c)
			for s.Scan() {
				var req struct {
					ID json.RawMessage `json:"id"`
				}
				json.Unmarshal(s.Bytes(), &req)
				fmt.Fprintf(c, `{"jsonrpc":"2.0","id":%s,"result":{}}`+"\n", req.ID)
			}
		}()
	}
}

// With no XDG_RUNTIME_DIR the default socket is /tmp/stepup-UID/agent.sock,
// a name any local user can take first. A client must not talk to an agent
// run by another user: it would hand that user the codes and passwords it
// asks for on its terminal. It checks the peer's uid when it connects.
func TestClientRefusesAnotherUsersAgent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("runs the fake agent under another uid with Linux credentials")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the fake agent as another user")
	}
	// A directory the other user can reach, like /tmp/stepup-UID; the
	// test binary is copied there, since go test's build directory is
	// root's only.
	dir, err := os.MkdirTemp("", "stepup-other-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	path := filepath.Join(dir, "agent.sock")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "fake-agent")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envFakeAgent+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		testenv.Missing(t, "cannot run a process as uid 65534: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("fake agent did not start: %q, %v", line, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := &Client{Socket: path}
	defer c.Close()
	err = c.Call(ctx, "status", struct{}{}, nil)
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("Call to another user's agent = %v; want a DialError", err)
	}
	if !strings.Contains(err.Error(), "uid 65534") || !strings.Contains(de.Hint(), "remove") {
		t.Fatalf("error = %v, hint = %q: want the owner's uid and what to do", err, de.Hint())
	}
	// A prompt (its own connection) is refused the same way.
	if _, err := c.PromptStepUpAuth(ctx, PromptOptions{Scopes: []string{"x"}}); !errors.As(err, &de) {
		t.Fatalf("PromptStepUpAuth to another user's agent = %v; want a DialError", err)
	}
}
