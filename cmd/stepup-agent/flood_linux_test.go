package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"github.com/stepup-agent/stepup-agent/ipc"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// halfLine is the start of a request that never ends: a slowloris.
const halfLine = `{"jsonrpc":"2.0","id":1,"meth`

// TestAgentSurvivesAConnectionFlood is the attack of issue 11 item 13
// against the real daemon: connections that send half a line and hold
// it. One process past the per-process cap is told why and closed while
// another process is served; processes together past the global cap are
// told so; every half line is closed at the line deadline, after which
// the agent holds no more descriptors than before and answers again.
func TestAgentSurvivesAConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); lim.Max < 2*ipc.DefaultMaxConns {
		testenv.Missing(t, "the descriptor limit (ulimit -Hn %d) is below the %d this flood of the agent's %d-connection cap needs", lim.Max, 2*ipc.DefaultMaxConns, ipc.DefaultMaxConns)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	c := exec.Command(stepuptest.Build(t, "stepup-agent"), "-D", "-a", sock, "--keychain", "memory", "--prompter", "none",
		"--policy", filepath.Join(dir, "none.yaml"), "--audit", filepath.Join(dir, "audit.jsonl"))
	c.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+dir, "XDG_STATE_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	c.Stdout, c.Stderr = io.Discard, io.Discard
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	waitFor(t, sock)
	fds := func() int {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.Process.Pid))
		return len(ents)
	}
	before := fds()
	stepupctl := stepuptest.Build(t, "stepupctl")
	status := func() error {
		cmd := exec.Command(stepupctl, "status")
		cmd.Env = append(os.Environ(), "STEPUP_AUTH_SOCK="+sock)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}

	// This process fills its own cap with half lines.
	started := time.Now()
	held := make([]net.Conn, 0, ipc.DefaultMaxConnsPerPeer)
	for range ipc.DefaultMaxConnsPerPeer {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := io.WriteString(conn, halfLine); err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	if line := refusal(t, sock); !strings.Contains(line, "too many connections from this process") || !strings.Contains(line, "4003") {
		t.Fatalf("past the per-process cap: %q", line)
	}
	// Another process is served meanwhile.
	if err := status(); err != nil {
		t.Fatalf("another process while one holds its cap: %v", err)
	}

	// Four more processes together pass the global cap: those past it
	// are told so, none is left without an answer or a place.
	const children, each = 4, 1000
	type child struct {
		cmd   *exec.Cmd
		stdin io.Closer
		out   *bufio.Reader
	}
	var kids []child
	for range children {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFloodHelper$")
		cmd.Env = append(os.Environ(), "STEPUP_FLOOD_SOCK="+sock, fmt.Sprint("STEPUP_FLOOD_N=", each))
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		kids = append(kids, child{cmd, in, bufio.NewReader(out)})
	}
	refused, holding := 0, 0
	for _, k := range kids {
		line, _ := k.out.ReadString('\n')
		var h, g, o int
		if _, err := fmt.Sscanf(line, "held %d global %d other %d", &h, &g, &o); err != nil || o != 0 {
			t.Fatalf("flood helper: %q", line)
		}
		refused += g
		holding += h
	}
	// Every helper holds its connections until its stdin closes.
	n := fds()
	for _, k := range kids {
		k.stdin.Close()
		k.cmd.Wait()
	}
	if refused == 0 {
		t.Fatalf("%d processes with %d connections each were never refused past the global cap of %d", children, each, ipc.DefaultMaxConns)
	}
	if holding+len(held) > ipc.DefaultMaxConns || n > ipc.DefaultMaxConns+200 {
		t.Fatalf("the agent held %d connections (%d descriptors), past its cap of %d", holding+len(held), n, ipc.DefaultMaxConns)
	}
	t.Logf("flood: %d connections held, %d refused past the global cap, %d descriptors in the agent", holding+len(held), refused, n)

	// At the line deadline every half line is answered and closed.
	for i, conn := range held {
		conn.SetReadDeadline(started.Add(ipc.DefaultLineTimeout + 15*time.Second))
		b, err := io.ReadAll(conn)
		if err != nil || !strings.Contains(string(b), "-32600") {
			t.Fatalf("half line %d after the deadline: %q, %v", i, b, err)
		}
	}
	// What may stay: the pidfds of the callers' parents the agent met
	// (peer's ancestor cache, bounded at 128; here a few processes).
	const slack = 16
	deadline := time.Now().Add(10 * time.Second)
	for fds() > before+slack && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := fds(); n > before+slack {
		t.Fatalf("after the flood the agent holds %d descriptors, %d before: %s", n, before, fdList(c.Process.Pid))
	}
	if err := status(); err != nil {
		t.Fatalf("after the flood: %v", err)
	}
}

// refusal dials sock and returns the line the agent answers with before
// closing (empty when it answers nothing within 5 s).
func refusal(t *testing.T, sock string) string {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return line
}

// TestFloodHelper is one flooding process of TestAgentSurvivesAConnectionFlood:
// it opens STEPUP_FLOOD_N connections with half a line each and counts
// which were refused and how; it reports "held H global G other O" and
// exits, closing them.
func TestFloodHelper(t *testing.T) {
	sock := os.Getenv("STEPUP_FLOOD_SOCK")
	if sock == "" {
		t.Skip("helper process only")
	}
	var n int
	fmt.Sscan(os.Getenv("STEPUP_FLOOD_N"), &n)
	conns := make([]net.Conn, 0, n)
	for range n {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, halfLine)
		conns = append(conns, conn)
	}
	// A refused connection gets its error line at once; a held one gets
	// nothing until the line deadline.
	answers := make([]string, len(conns))
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn.SetReadDeadline(time.Now().Add(time.Second))
			answers[i], _ = bufio.NewReader(conn).ReadString('\n')
			conn.SetReadDeadline(time.Time{})
		}()
	}
	wg.Wait()
	var held, global, other int
	for _, line := range answers {
		switch {
		case line == "":
			held++
		case strings.Contains(line, "too many connections: the agent has") && strings.Contains(line, "4003"):
			global++
		default:
			other++
			fmt.Fprintf(os.Stderr, "unexpected answer: %q\n", line)
		}
	}
	fmt.Printf("held %d global %d other %d\n", held, global, other)
	io.Copy(io.Discard, os.Stdin) // hold them until the test is done counting
	for _, conn := range conns {
		conn.Close()
	}
}

func fdList(pid int) string {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var names []string
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		names = append(names, e.Name()+"->"+l)
	}
	return strings.Join(names, " ")
}
