//go:build linux

package remote_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stepup-agent/stepup-agent/internal/sshtest"
	"github.com/stepup-agent/stepup-agent/remote"
	"golang.org/x/sys/unix"
)

func TestDestination(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
		ok   bool
	}{
		{[]string{"ssh", "build-01"}, "build-01", true},
		{[]string{"/usr/bin/ssh", "-R", "/run/user/1000/stepup/agent.sock:/run/user/1000/stepup/remote.sock", "alice@build-01", "deployctl"}, "alice@build-01", true},
		{[]string{"ssh", "-p2222", "-i", "key", "-tt", "-oStrictHostKeyChecking=no", "host.example"}, "host.example", true},
		{[]string{"ssh", "-vvv", "-F", "cfg", "-NT", "build-01"}, "build-01", true},
		{[]string{"ssh", "-R", "a:b", "-X", "-J", "jump", "--", "-weird"}, "-weird", true},
		{[]string{"ssh", "-l"}, "", false},
		{[]string{"sshd", "host"}, "", false},
		{[]string{"/usr/bin/python3", "ssh", "host"}, "", false},
	} {
		got, ok := remote.Destination(tc.argv)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Destination(%q) = %q, %v; want %q, %v", tc.argv, got, ok, tc.want, tc.ok)
		}
	}
}

// A real ssh -R on a pseudo-terminal forwards a socket on a real sshd on
// 127.0.0.1; a program on the "server" side connects to the forwarded
// path; the local listener (the agent's remote socket) sees ssh as its
// peer, and Identify names the destination as typed and ssh's terminal.
func TestIdentifyForwardingSSH(t *testing.T) {
	srv := sshtest.Start(t, "build-01")
	dir := t.TempDir()
	local := filepath.Join(dir, "remote.sock")
	serverSide := filepath.Join(dir, "server-agent.sock")
	l, err := net.Listen("unix", local)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	cmd := exec.Command("ssh", "-F", srv.Config, "-N", "-R", serverSide+":"+local, "build-01")
	cmd.Env = append(os.Environ(), "DISPLAY=:77")
	ptmx, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait(); ptmx.Close() }()
	go func() {
		b := make([]byte, 4096)
		for {
			if _, err := ptmx.Read(b); err != nil {
				return
			}
		}
	}()

	// The "server-side program" dials the forwarded path once sshd has
	// made it.
	deadline := time.Now().Add(15 * time.Second)
	var c net.Conn
	for {
		c, err = net.Dial("unix", serverSide)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the forwarded socket never appeared: %v\nsshd log:\n%s", err, srv.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer c.Close()
	l.(*net.UnixListener).SetDeadline(time.Now().Add(10 * time.Second))
	acc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	raw, _ := acc.(*net.UnixConn).SyscallConn()
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.Pid) != cmd.Process.Pid {
		t.Fatalf("the peer of the local socket is pid %d, not the ssh client %d", cred.Pid, cmd.Process.Pid)
	}
	conn, err := remote.Identify(int(cred.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if conn.Destination != "build-01" {
		t.Fatalf("destination %q, want build-01 as typed", conn.Destination)
	}
	if !strings.HasPrefix(conn.TTY, "/dev/pts/") {
		t.Fatalf("ssh's terminal = %q, want its /dev/pts", conn.TTY)
	}
	if conn.Display != ":77" {
		t.Fatalf("ssh's display = %q", conn.Display)
	}
	if s := conn.String(); !strings.Contains(s, "ssh build-01 (pid ") {
		t.Fatalf("String() = %q", s)
	}
}

// A process that only calls itself ssh (argv[0]) is not taken for one.
func TestIdentifyNotSSH(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.Args = []string{"ssh", "build-01"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	conn, err := remote.Identify(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if conn.Destination != "" {
		t.Fatalf("a sleep calling itself ssh got destination %q", conn.Destination)
	}
	if !strings.Contains(conn.String(), "unrecognised") {
		t.Fatalf("String() = %q", conn.String())
	}
}
