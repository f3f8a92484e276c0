//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// rpc sends one JSON-RPC request on a new connection to sock and returns
// the answer line.
func rpc(t *testing.T, sock, method string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, `{"jsonrpc":"2.0","id":1,"method":%q,"params":{}}`+"\n", method)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%s on %s: %v", method, sock, err)
	}
	return line
}

// The socket unit's second ListenStream= (packaging/systemd): both
// sockets come named "agent" (FileDescriptorName= names every socket of a
// unit); a first connection on the remote socket starts the agent, which
// tells the two apart by path and serves the remote one as remote.
func TestSocketActivatedRemoteSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	sa := stepuptest.RequireProgram(t, "systemd-socket-activate")
	bin := stepuptest.Build(t, "stepup-agent")
	dir, err := os.MkdirTemp("", "stepup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := filepath.Join(dir, "run")
	sock := filepath.Join(run, "stepup", "agent.sock")
	rsock := filepath.Join(run, "stepup", "remote.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sa, "-l", sock, "-l", rsock, "--fdname=agent:agent",
		"-E", "XDG_RUNTIME_DIR="+run,
		"-E", "XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"-E", "XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"-E", "HOME="+filepath.Join(dir, "home"),
		"-E", "DBUS_SYSTEM_BUS_ADDRESS=unix:path="+filepath.Join(dir, "no-bus"),
		bin, "-D", "--keychain", "memory", "--prompter", "none")
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Lstat(rsock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate did not bind %s\n%s", rsock, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The first connection is on the remote socket: it starts the agent,
	// which serves it as remote (lock is refused there)...
	if got := rpc(t, rsock, "lock"); !strings.Contains(got, `"code":4005`) || !strings.Contains(got, "may not lock") {
		t.Fatalf("lock on the activated remote socket = %s\n%s", got, out)
	}
	if got := rpc(t, rsock, "status"); !strings.Contains(got, `"result"`) {
		t.Fatalf("status on the remote socket = %s\n%s", got, out)
	}
	// ...and the main socket as local.
	if got := rpc(t, sock, "lock"); !strings.Contains(got, `"locked":true`) {
		t.Fatalf("lock on the activated socket = %s\n%s", got, out)
	}
	if !strings.Contains(out.String(), "serving the inherited remote socket") {
		t.Fatalf("the agent did not say it serves the inherited remote socket:\n%s", out)
	}
}
