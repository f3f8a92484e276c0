// Package testenv holds what the tests of every package share: the rule
// for a missing prerequisite (fail in CI, skip elsewhere) and small
// helpers. It is imported by _test files only.
package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Strict reports whether a missing prerequisite must fail the test: in CI
// (CI=true) or with STEPUP_TEST_REQUIRE_ALL set. A test that skips there
// would hide a broken install step (scripts/install-deps.sh).
func Strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("STEPUP_TEST_REQUIRE_ALL") != ""
}

// Missing fails the test when Strict, and skips it otherwise, saying what
// is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Strict() {
		t.Fatalf("missing prerequisite: "+format+" (scripts/install-deps.sh installs it)", args...)
	}
	t.Skipf("missing prerequisite: "+format, args...)
}

// Program returns the path of the program name, or fails or skips the
// test (Missing) when it is not installed.
func Program(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not installed (scripts/apt-packages.txt lists its package)", name)
	}
	return p
}

// LockedBuffer is a bytes.Buffer safe for a process's output written
// from one goroutine and read from another.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Children lists the processes whose parent is ppid and whose name starts
// with prefix, read from /proc. Zombies (exited, not yet reaped) count
// only when withZombies is set.
func Children(ppid int, prefix string, withZombies bool) []int {
	ents, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 2 || f[0] == "Z" && !withZombies {
			continue
		}
		if p, _ := strconv.Atoi(f[1]); p == ppid && strings.HasPrefix(s[open+1:close], prefix) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(e)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// RepoRoot returns the repository's root: the nearest directory above the
// test's working directory that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the repository root (go.mod)")
		}
		dir = parent
	}
}

// Serve listens on network and addr until the test ends and runs serve
// for each connection it accepts, in its own goroutine, closing the
// connection after. It returns the address it listens on.
func Serve(t testing.TB, network, addr string, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// ServeLoopback is Serve on a loopback TCP port ("127.0.0.1:N").
func ServeLoopback(t testing.TB, serve func(c net.Conn)) string {
	t.Helper()
	return Serve(t, "tcp", "127.0.0.1:0", serve)
}

// WaitFor polls cond every 10ms until it holds, and fails the test,
// naming what it waited for, when it does not within d.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RecordingAgent is a stand-in agent on a Unix socket in a temporary
// directory: it sends each request's params to the channel it returns
// and answers every request with reply, the answer's member after its
// id (`"result":{...}` or `"error":{...}`).
func RecordingAgent(t testing.TB, reply string) (string, <-chan map[string]json.RawMessage) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "a.sock")
	got := make(chan map[string]json.RawMessage, 32)
	Serve(t, "unix", path, func(c net.Conn) {
		s := bufio.NewScanner(c)
		for s.Scan() {
			var req struct {
				ID     json.RawMessage            `json:"id"`
				Params map[string]json.RawMessage `json:"params"`
			}
			json.Unmarshal(s.Bytes(), &req)
			got <- req.Params
			fmt.Fprintf(c, `{"jsonrpc":"2.0","id":%s,%s}`+"\n", req.ID, reply)
		}
	})
	return path, got
}
