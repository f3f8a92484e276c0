package peer

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
)

// Helper modes of the test binary.
const (
	envConnect = "PEER_TEST_CONNECT"  // connect to this socket, wait for EOF
	envSpawn   = "PEER_TEST_SPAWN"    // run a child that connects, and wait for it
	envTwice   = "PEER_TEST_TWICE"    // connect again once this file exists
	envOrphans = "PEER_TEST_ORPHANS"  // start two connecting children, and exit without waiting
	envInPidNS = "PEER_TEST_IN_PIDNS" // this run is the one inside a new pid namespace
)

func TestMain(m *testing.M) {
	if path := os.Getenv(envConnect); path != "" {
		if os.Getenv(envOrphans) != "" {
			os.Unsetenv(envOrphans)
			for i := 0; i < 2; i++ {
				cmd := exec.Command(os.Args[0])
				cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
				if err := cmd.Start(); err != nil {
					os.Exit(1)
				}
			}
			os.Exit(0)
		}
		if os.Getenv(envSpawn) != "" {
			os.Unsetenv(envSpawn)
			cmd := exec.Command(os.Args[0])
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				os.Exit(1)
			}
			os.Exit(0)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			os.Exit(1)
		}
		io.Copy(io.Discard, c)
		if gate := os.Getenv(envTwice); gate != "" {
			for _, err := os.Stat(gate); err != nil; _, err = os.Stat(gate) {
				time.Sleep(10 * time.Millisecond)
			}
			c, err := net.Dial("unix", path)
			if err != nil {
				os.Exit(1)
			}
			io.Copy(io.Discard, c)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// server accepts connections and identifies each.
type server struct {
	t    *testing.T
	path string
	ids  chan *Identity
}

func newServer(t *testing.T) *server {
	dir, err := os.MkdirTemp("", "peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &server{t: t, path: filepath.Join(dir, "s.sock"), ids: make(chan *Identity, 8)}
	ln, err := net.Listen("unix", s.path)
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
			id, err := Identify(c)
			if err != nil {
				t.Errorf("Identify: %v", err)
			}
			s.ids <- id
			// Closing the connection lets the client exit.
			c.Close()
		}
	}()
	return s
}

func (s *server) next() *Identity {
	s.t.Helper()
	select {
	case id := <-s.ids:
		if id == nil {
			s.t.Fatal("no identity")
		}
		return id
	case <-time.After(20 * time.Second):
		s.t.Fatal("no client connected")
	}
	return nil
}

// run starts cmd, which connects to s, and returns its identity once it
// has connected; the process exits when the server closes.
func (s *server) run(cmd *exec.Cmd) *Identity {
	s.t.Helper()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, envConnect+"="+s.path)
	cmd.Stderr = os.Stderr
	if cmd.SysProcAttr == nil || !cmd.SysProcAttr.Setctty {
		if err := cmd.Start(); err != nil {
			s.t.Fatal(err)
		}
	} else {
		f, err := pty.StartWithAttrs(cmd, nil, cmd.SysProcAttr)
		if err != nil {
			s.t.Fatal(err)
		}
		s.t.Cleanup(func() { f.Close() })
		go io.Copy(io.Discard, f)
	}
	s.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return s.next()
}

func selfCopy(t *testing.T, name string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIdentifyRealProcesses(t *testing.T) {
	s := newServer(t)
	self, _ := os.Executable()
	me, err := IdentifyPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}

	a := s.run(exec.Command(self))
	if a.UID != os.Getuid() || a.Executable != self || a.Start == 0 || a.Boot == "" {
		t.Fatalf("identity = %+v; want this uid, executable %s, a start time and a boot id", a, self)
	}
	if !a.Session.Known() || a.Session != me.Session {
		t.Fatalf("a child's session %v differs from its parent's %v", a.Session, me.Session)
	}
	if len(a.Parents) == 0 || a.Parents[0] != me.Proc {
		t.Fatalf("parents = %v; want this test (%v) first", a.Parents, me.Proc)
	}
	b := s.run(exec.Command(self))
	if !Client.Admits(a, b) || Process.Admits(a, b) || !Session.Admits(a, b) {
		t.Error("two runs of one program: want client and session to admit, process not (siblings)")
	}

	// Two different executables.
	other := s.run(exec.Command(selfCopy(t, "other-program")))
	if Client.Admits(a, other) || !Session.Admits(a, other) || !User.Admits(a, other) {
		t.Error("another executable: want client to refuse, session and user to admit")
	}

	// Descendants and siblings under process binding.
	spawner := exec.Command(self)
	spawner.Env = append(os.Environ(), envSpawn+"=1")
	kid := s.run(spawner)
	if kid.Parents[0] != (Proc{PID: spawner.Process.Pid, Start: kid.Parents[0].Start}) {
		t.Fatalf("the grandchild's parent is %v, want pid %d", kid.Parents[0], spawner.Process.Pid)
	}
	parent := &Identity{UID: kid.UID, Boot: kid.Boot, Proc: kid.Parents[0], Executable: self, Session: kid.Session}
	if !Process.Admits(parent, kid) {
		t.Error("process binding refuses a descendant")
	}
	if Process.Admits(kid, parent) || Process.Admits(a, kid) {
		t.Error("process binding admits an ancestor or a sibling's child")
	}
	if !Process.Admits(me, a) {
		t.Error("process binding refuses this test's own child")
	}

	// A setsid child leaves the session.
	sid := exec.Command(self)
	sid.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	setsid := s.run(sid)
	if setsid.Session == a.Session || Session.Admits(a, setsid) || Client.Admits(a, setsid) {
		t.Errorf("a setsid child (session %v) shares the session %v", setsid.Session, a.Session)
	}
	if me.Session.Kind == SessionAudit && setsid.Session.Kind != SessionAudit {
		t.Error("setsid left the audit session")
	}

	// Different controlling terminals.
	t1 := exec.Command(self)
	t1.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	p1 := s.run(t1)
	t2 := exec.Command(self)
	t2.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	p2 := s.run(t2)
	if me.Session.Kind == SessionAudit {
		t.Logf("an audit session is set: terminals do not split it (sessions %v, %v)", p1.Session, p2.Session)
	} else {
		if p1.Session.Kind != SessionTTY || p2.Session.Kind != SessionTTY || p1.Session == p2.Session {
			t.Fatalf("sessions on two ptys: %v, %v; want two different terminals", p1.Session, p2.Session)
		}
		if Session.Admits(p1, p2) || Client.Admits(p1, p2) || !User.Admits(p1, p2) {
			t.Error("two terminals: want session and client to refuse, user to admit")
		}
		if !strings.HasPrefix(p1.Session.String(), "terminal pts/") {
			t.Errorf("session = %q, want terminal pts/N", p1.Session.String())
		}
	}
}

// Two scripts of one interpreter are two clients; one script run twice
// is one.
func TestIdentifyScripts(t *testing.T) {
	node := testenv.Program(t, "node")
	s := newServer(t)
	dir := t.TempDir()
	script := `const c = require("net").connect(process.env.` + envConnect + `); c.on("data", () => {}); c.on("end", () => process.exit(0));`
	for _, n := range []string{"a.js", "b.js"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) *Identity {
		cmd := exec.Command(node, args...)
		cmd.Dir = dir
		return s.run(cmd)
	}
	a1 := run("a.js")
	a2 := run("--no-warnings", filepath.Join(dir, "a.js"))
	b := run("b.js")
	if a1.Script != filepath.Join(dir, "a.js") {
		t.Fatalf("Script = %q, want %s", a1.Script, filepath.Join(dir, "a.js"))
	}
	if !Client.Admits(a1, a2) {
		t.Error("one script run twice: client refuses")
	}
	if Client.Admits(a1, b) || !Session.Admits(a1, b) {
		t.Error("two scripts of one interpreter: want client to refuse, session to admit")
	}
	if d := a1.Display(); !strings.Contains(d, "node ") || !strings.Contains(d, "a.js (pid ") {
		t.Errorf("Display = %q; want the interpreter and the script", d)
	}
}

// Identify works on a connection whose client has already exited only
// when the kernel still holds its identity; it never returns another
// process's.
func TestIdentifyCred(t *testing.T) {
	s := newServer(t)
	c, err := net.Dial("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cred, known, err := ReadCred(c)
	if err != nil || !known || cred.UID != os.Getuid() || cred.PID != os.Getpid() {
		t.Fatalf("ReadCred = %+v, %v, %v; want this process (the listener)", cred, known, err)
	}
	id := s.next()
	if id.PID != os.Getpid() {
		t.Fatalf("Identify = pid %d, want %d", id.PID, os.Getpid())
	}
	bufio.NewReader(c).ReadByte()
}

func BenchmarkIdentify(b *testing.B) {
	dir := b.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("unix", filepath.Join(dir, "s"))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	sc, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Identify(sc); err != nil {
			b.Fatal(err)
		}
	}
}

// A client that connects and exits before the server identifies it is
// refused: its pid may already name another process.
func TestIdentifyGoneClient(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envConnect+"="+path)
	// The helper connects and waits; kill and reap it between accept
	// and identify.
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := ln.Accept()
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil {
		t.Fatalf("the client did not connect: %v", err)
	}
	defer c.Close()
	id, err := Identify(c)
	if err == nil {
		t.Fatalf("Identify of an exited client = %+v; want an error", id)
	}
}

// A process of another uid is identified as that uid, and no binding
// admits it to this user's tokens.
func TestIdentifyAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	dir, err := os.MkdirTemp("", "peer-uid-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	path := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	os.Chmod(path, 0o777)
	exe := filepath.Join(dir, "client")
	self, _ := os.Executable()
	data, _ := os.ReadFile(self)
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envConnect+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		testenv.Missing(t, "cannot run a process as uid 65534: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("the client of uid 65534 did not connect: %v", err)
	}
	defer c.Close()
	other, err := Identify(c)
	if err != nil {
		t.Fatal(err)
	}
	me, _ := IdentifyPID(os.Getpid())
	if other.UID != 65534 || User.Admits(me, other) || Process.Admits(me, other) {
		t.Fatalf("another uid: %+v; want uid 65534 and no binding to admit it", other)
	}
}

// The parent chain comes from a cache of the ancestors' start times,
// pinned by pidfds: it is what /proc says, and a parent that exited
// leaves the chain of its reparented child.
func TestParentsCacheFollowsExits(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	st, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if got, _ := parents(nil, st, -1); !equalProcs(got, walkUncached(nil, st)) {
			want := walkUncached(nil, st)
			t.Fatalf("cached chain %v, /proc says %v", got, want)
		}
	}

	s := newServer(t)
	cmd := exec.Command("sh", "-c", `"$0" & wait`, self)
	gate := filepath.Join(t.TempDir(), "gate")
	cmd.Env = append(os.Environ(), envTwice+"="+gate)
	first := s.run(cmd)
	if len(first.Parents) == 0 || first.Parents[0].PID != cmd.Process.Pid {
		t.Fatalf("the shell %d is not the first parent: %v", cmd.Process.Pid, first.Parents)
	}
	shell := first.Parents[0]
	// The shell exits; its child, still connected, is reparented.
	cmd.Process.Kill()
	cmd.Wait()
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	second := s.next()
	if second.Proc != first.Proc {
		t.Fatalf("second connection from %v, want %v", second.Proc, first.Proc)
	}
	if second.DescendsFrom(shell) {
		t.Fatalf("the child still descends from its exited parent %v: %v", shell, second.Parents)
	}
	cst, err := readStat(second.PID)
	if err != nil {
		t.Fatal(err)
	}
	if want := walkUncached(nil, cst); !equalProcs(second.Parents, want) {
		t.Fatalf("after the exit the chain is %v, /proc says %v", second.Parents, want)
	}
}

func equalProcs(a, b []Proc) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A session whose leader has exited is not unknown: each surviving
// process tree in it is a session of its own (the tree under its topmost
// process), so two orphans of one dead leader do not share a session.
func TestIdentifyLeaderGone(t *testing.T) {
	s := newServer(t)
	gate := filepath.Join(t.TempDir(), "gate")
	leader := exec.Command(os.Args[0])
	leader.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	leader.Env = append(os.Environ(), envOrphans+"=1", envTwice+"="+gate, envConnect+"="+s.path)
	leader.Stderr = os.Stderr
	if err := leader.Run(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		s.next() // the first connections, made while the leader may live
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := s.next(), s.next()
	for _, id := range []*Identity{a, b} {
		if id.Session.Kind != SessionTree || id.Session.ID != uint64(id.PID) || id.Session.Start != id.Start {
			t.Errorf("pid %d, whose session leader pid %d exited: session %+v; want the process tree of pid %d", id.PID, leader.Process.Pid, id.Session, id.PID)
		}
	}
	if a.Session == b.Session || Session.Admits(a, b) || Client.Admits(a, b) {
		t.Errorf("two orphans of one dead leader share a session: %v, %v", a.Session, b.Session)
	}
	if !strings.HasPrefix(a.Session.String(), "process tree of pid ") {
		t.Errorf("session = %q, want \"process tree of pid N\"", a.Session.String())
	}
}

// Where the kernel shows no session leader at all (session 0: the
// children of an init that never called setsid, as on some CI machines
// and containers, or a leader outside the agent's pid namespace), one
// program's children still share its session, and two scripts are still
// two clients. The tests above run again inside a new pid namespace,
// where every session id reads 0.
func TestIdentifyWithoutSessionLeader(t *testing.T) {
	if os.Getenv(envInPidNS) != "" {
		t.Skip("this is the run inside the pid namespace")
	}
	unshare := testenv.Program(t, "unshare")
	args := []string{"--pid", "--fork", "--mount-proc"}
	if os.Geteuid() != 0 {
		args = append([]string{"--user", "--map-root-user"}, args...)
	}
	// sh stays pid 1 (it does not exec its last command), like an init
	// that never called setsid.
	args = append(args, "sh", "-c", `"$0" "$@"; s=$?; exit $s`, os.Args[0],
		"-test.run", "^(TestIdentifyRealProcesses|TestIdentifyScripts|TestIdentifyLeaderGone)$", "-test.v")
	cmd := exec.Command(unshare, args...)
	cmd.Env = append(os.Environ(), envInPidNS+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "unshare failed") {
		testenv.Missing(t, "cannot make a pid namespace: %s", out)
	}
	if err != nil {
		t.Fatalf("inside a new pid namespace: %v\n%s", err, out)
	}
	for _, name := range []string{"TestIdentifyRealProcesses", "TestIdentifyLeaderGone"} {
		if !strings.Contains(string(out), "--- PASS: "+name) {
			t.Errorf("%s did not pass inside the pid namespace:\n%s", name, out)
		}
	}
}
