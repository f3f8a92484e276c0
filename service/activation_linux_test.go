package service

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// activate runs the test binary as childServe under systemd-socket-activate
// listening on sock, with extra arguments (-E, --fdname, ...) and a shell
// umask. It returns the command (started) and its combined output.
func activate(t *testing.T, ctx context.Context, umask string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	sa := requireProgram(t, "systemd-socket-activate")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"-c", "umask " + umask + "; exec \"$@\"", "sh", sa}, args...)
	all = append(all, "-E", "STEPUP_SERVICE_TEST_CHILD=serve", self)
	cmd := exec.CommandContext(ctx, "sh", all...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dialWhenReady dials sock once systemd-socket-activate has bound it.
func dialWhenReady(t *testing.T, sock string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s never accepted a connection: %v", sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitForFile waits until systemd-socket-activate has bound path (it does
// not start the child before the first connection).
func waitForFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Lstat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// notifySocket binds a datagram socket for NOTIFY_SOCKET and collects what
// arrives on it.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan string
}

func newNotifySocket(t *testing.T, dir string) *notifySocket {
	t.Helper()
	p := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ns := &notifySocket{path: p, conn: c, msgs: make(chan string, 100)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				close(ns.msgs)
				return
			}
			ns.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return ns
}

// waitFor reads datagrams until one satisfies ok, and returns all read.
func (ns *notifySocket) waitFor(t *testing.T, what string, ok func(string) bool) []string {
	t.Helper()
	var seen []string
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, open := <-ns.msgs:
			if !open {
				t.Fatalf("notify socket closed before %s; got %q", what, seen)
			}
			seen = append(seen, m)
			if ok(m) {
				return seen
			}
		case <-timeout:
			t.Fatalf("no %s on NOTIFY_SOCKET; got %q", what, seen)
		}
	}
}

func TestSocketActivationServesAndNotifies(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ns := newNotifySocket(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Debian 12's systemd-socket-activate passes only the variables named
	// with -E (and PATH, HOME, TERM): -E NOTIFY_SOCKET=... works.
	cmd, out := activate(t, ctx, "077", "-l", sock, "--fdname=agent",
		"-E", "NOTIFY_SOCKET="+ns.path, "-E", "WATCHDOG_USEC=200000", "-E", "STEPUP_SERVICE_TEST_LINGER=400ms")

	c := dialWhenReady(t, sock)
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	hello, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer from the activated child: %v\n%s", err, out)
	}
	if !strings.Contains(hello, "activated=true") || !strings.Contains(hello, `listen_fds=""`) || !strings.Contains(hello, `listen_pid=""`) || !strings.Contains(hello, sock) {
		t.Fatalf("child said %q; want activated=true, LISTEN_* unset and addr %s", hello, sock)
	}

	seen := ns.waitFor(t, "READY=1", func(m string) bool { return strings.HasPrefix(m, "READY=1") })
	ready := seen[len(seen)-1]
	if ready != "READY=1\nSTATUS=serving the test second line" {
		t.Errorf("READY datagram = %q; want READY=1 with a one-line STATUS", ready)
	}
	fmt.Fprintln(c, "ping")
	ns.waitFor(t, "STATUS=got ping", func(m string) bool { return m == "STATUS=got ping" })
	// WATCHDOG_USEC=200ms: a ping every 100ms while the child lingers.
	var dogs int
	seen = ns.waitFor(t, "STOPPING=1", func(m string) bool {
		if m == "WATCHDOG=1" {
			dogs++
		}
		return strings.HasPrefix(m, "STOPPING=1")
	})
	if dogs < 2 {
		t.Errorf("got %d WATCHDOG=1 before STOPPING=1 (want >= 2 at 100ms over 400ms): %q", dogs, seen)
	}
	if bye, _ := r.ReadString('\n'); bye != "bye\n" {
		t.Errorf("child's last line = %q", bye)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
}

func TestSocketActivationNoWatchdogWithoutUsec(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ns := newNotifySocket(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, out := activate(t, ctx, "077", "-l", sock, "--fdname=agent", "-E", "NOTIFY_SOCKET="+ns.path, "-E", "STEPUP_SERVICE_TEST_LINGER=300ms")
	c := dialWhenReady(t, sock)
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatalf("no answer: %v\n%s", err, out)
	}
	fmt.Fprintln(c, "x")
	seen := ns.waitFor(t, "STOPPING=1", func(m string) bool { return strings.HasPrefix(m, "STOPPING=1") })
	for _, m := range seen {
		if m == "WATCHDOG=1" {
			t.Errorf("WATCHDOG=1 sent without WATCHDOG_USEC: %q", seen)
		}
	}
	cmd.Wait()
}

// TestSocketActivationRefuses: the inherited socket gets the checks the
// agent's own socket gets; the child exits with a message that says what
// to fix.
func TestSocketActivationRefuses(t *testing.T) {
	cases := []struct {
		name   string
		umask  string
		setup  func(dir string)
		bound  func(sock string)
		args   func(sock string) []string
		expect string
	}{
		{
			// systemd-socket-activate sets its own umask; chmod stands in
			// for SocketMode=0666.
			name: "socket others can connect to", umask: "077",
			bound:  func(s string) { os.Chmod(s, 0o666) },
			args:   func(s string) []string { return []string{"-l", s, "--fdname=agent"} },
			expect: "others can connect to",
		},
		{
			name: "directory others can write to", umask: "077",
			setup:  func(dir string) { os.Chmod(dir, 0o777) },
			args:   func(s string) []string { return []string{"-l", s, "--fdname=agent"} },
			expect: "others can write to its directory",
		},
		{
			name: "datagram socket", umask: "077",
			args:   func(s string) []string { return []string{"-d", "-l", s, "--fdname=agent"} },
			expect: "not a stream socket",
		},
		{
			name: "two sockets, none named agent", umask: "077",
			args:   func(s string) []string { return []string{"-l", s, "-l", s + "2", "--fdname=one:two"} },
			expect: `none is named "agent"`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "d")
			os.Mkdir(dir, 0o700)
			if tc.setup != nil {
				tc.setup(dir)
			}
			sock := filepath.Join(dir, "agent.sock")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd, out := activate(t, ctx, tc.umask, tc.args(sock)...)
			if strings.Contains(tc.name, "datagram") {
				// A datagram "connection": send one to wake the activator.
				deadline := time.Now().Add(10 * time.Second)
				for {
					c, err := net.Dial("unixgram", sock)
					if err == nil {
						c.Write([]byte("x"))
						c.Close()
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no datagram socket: %v\n%s", err, out)
					}
					time.Sleep(20 * time.Millisecond)
				}
			} else {
				if tc.bound != nil {
					waitForFile(t, sock)
					tc.bound(sock)
				}
				c := dialWhenReady(t, sock)
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if b, _ := bufio.NewReader(c).ReadString('\n'); b != "" {
					t.Errorf("the child answered %q on a socket it must refuse", b)
				}
				c.Close()
			}
			err := cmd.Wait()
			if err == nil {
				t.Fatalf("child exited 0; want a refusal\n%s", out)
			}
			if !strings.Contains(out.String(), tc.expect) {
				t.Fatalf("child's output lacks %q:\n%s", tc.expect, out)
			}
		})
	}
}

func TestListenerNotActivated(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	ln, ok, err := Listener(nil)
	if ln != nil || ok || err != nil {
		t.Fatalf("Listener() = %v, %v, %v without LISTEN_FDS; want nil, false, nil", ln, ok, err)
	}
	// Descriptors meant for another process (LISTEN_PID is not ours) are
	// not taken, and the variables are cleared.
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "agent")
	ln, ok, err = Listener(nil)
	if ln != nil || ok || err != nil {
		t.Fatalf("Listener() = %v, %v, %v for another pid; want nil, false, nil", ln, ok, err)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, set := os.LookupEnv(k); set {
			t.Errorf("%s still set after Listener", k)
		}
	}
}
