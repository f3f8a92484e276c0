package password

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func requireAll() bool {
	return testenv.Strict()
}

func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	testenv.Missing(t, format, args...)
}

func repoRoot(t *testing.T) string { return testenv.RepoRoot(t) }

func run(t *testing.T, stdin string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// testService is the PAM service the tests install: the packaged file
// under a name of this test process's own, so that concurrent test runs
// do not remove each other's.
var testService = func() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "stepup-agent-test-" + hex.EncodeToString(b)
}()

// testUser creates a throw-away local user with a known password (root
// only), installs the packaged PAM service file as testService, and
// removes both when the test ends.
func testUser(t *testing.T) (name, password string) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "creating a test user needs root (CI runs as root)")
	}
	for _, p := range []string{"useradd", "userdel", "chpasswd"} {
		if _, err := exec.LookPath(p); err != nil {
			missing(t, "%s is not installed (Debian package passwd)", p)
		}
	}
	if _, err := os.Stat("/etc/pam.d/common-auth"); err != nil {
		missing(t, "/etc/pam.d/common-auth is missing (Debian package libpam-runtime)")
	}
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "pam", "stepup-agent"))
	if err != nil {
		t.Fatal(err)
	}
	svc := filepath.Join("/etc/pam.d", testService)
	if err := os.WriteFile(svc, src, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(svc) })

	b := make([]byte, 4)
	rand.Read(b)
	name = "stepuptest" + hex.EncodeToString(b)
	rand.Read(b)
	password = "Pw-" + hex.EncodeToString(b) + " with spaces"
	run(t, "", "useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "userdel", name).CombinedOutput(); err != nil {
			t.Logf("userdel %s: %v: %s", name, err, out)
		}
	})
	run(t, name+":"+password+"\n", "chpasswd")
	return name, password
}

// helperOnce builds the real helper (cgo, libpam) once per test binary
// into a directory every user can read, so it can run as the test user.
var (
	helperMu   sync.Mutex
	helperPath string
	binDir     string
)

// sharedBin returns a 0755 directory for executables other users run.
func sharedBin(t *testing.T) string {
	t.Helper()
	if binDir == "" {
		d, err := os.MkdirTemp("", "stepup-pw-bin")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755)
		binDir = d
	}
	return binDir
}

// goBuild builds pkg into dir with cgo on or off.
func goBuild(t *testing.T, pkg, dir string, cgo bool) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", pkg)
	cmd.Dir = repoRoot(t)
	c := "0"
	if cgo {
		c = "1"
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+c)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return filepath.Join(dir, filepath.Base(pkg)), nil
}

// realHelper returns the path of the real stepup-pam-helper.
func realHelper(t *testing.T) string {
	t.Helper()
	helperMu.Lock()
	defer helperMu.Unlock()
	if helperPath != "" {
		return helperPath
	}
	p, err := goBuild(t, "./cmd/stepup-pam-helper", sharedBin(t), true)
	if err != nil {
		if strings.Contains(err.Error(), "pam_appl.h") || strings.Contains(err.Error(), "C compiler") {
			missing(t, "building stepup-pam-helper needs gcc and libpam0g-dev: %v", err)
		}
		t.Fatal(err)
	}
	helperPath = p
	return p
}

// credOf returns the credentials that run a process as user name.
func credOf(t *testing.T, name string) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// TestPasswordThroughPAM checks passwords of a throw-away user through the
// real helper and the real PAM stack, run as that user (so pam_unix takes
// the unprivileged path through unix_chkpwd, as for every real user).
func TestPasswordThroughPAM(t *testing.T) {
	name, password := testUser(t)
	core, logs := observer.New(zap.DebugLevel)
	m := New(Config{Deps: method.Deps{Logger: zap.New(core)}, Service: testService, Helper: realHelper(t)})
	m.cred, m.user = credOf(t, name), name
	ctx := context.Background()

	if !m.NeedsNoCredential() {
		t.Fatalf("with the helper and its service file the method needs no credential: %v", m.Unavailable())
	}
	st, ch, err := m.Start(ctx, method.StartRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(ch); string(b) != "{}" {
		t.Fatalf("challenge %s", b)
	}
	if a := m.Ask(st); a.Field != "password" || !strings.Contains(a.Hint, name) {
		t.Fatalf("Ask = %+v", a)
	}
	if _, err := m.Complete(ctx, st, nil, pw(password)); err != nil {
		t.Fatalf("right password refused: %v", err)
	}
	start := time.Now()
	for _, wrong := range []string{password + "x", strings.ToUpper(password), "hunter2"} {
		if _, err := m.Complete(ctx, st, nil, pw(wrong)); !errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("wrong password: err = %v", err)
		}
	}
	t.Logf("three wrong passwords took %v (pam_unix's failure delay)", time.Since(start))
	if _, err := m.Complete(ctx, st, nil, pw("")); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("empty password: err = %v", err)
	}
	if _, err := m.Complete(ctx, st, nil, json.RawMessage(`{}`)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("no password: err = %v", err)
	}
	// The helper checks the account of the user it runs as: run as root,
	// the test user's password does not pass.
	asRoot := New(Config{Service: testService, Helper: realHelper(t)})
	if _, err := asRoot.Complete(ctx, nil, nil, pw(password)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("the test user's password passed for root: %v", err)
	}

	// A check abandoned mid-way (pam_unix sleeping on a failure) returns
	// the context's error at once and leaves no process behind: neither
	// the helper nor unix_chkpwd.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	var pid int
	m.started = func(p int) { pid = p }
	start = time.Now()
	_, err = m.Complete(short, st, nil, pw("wrong-again"))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("deadline: err = %v after %v", err, time.Since(start))
	}
	m.started = nil
	requireGroupGone(t, pid)
	// The next check works at once: nothing finishes in the background.
	if _, err := m.Complete(ctx, st, nil, pw(password)); err != nil {
		t.Fatalf("after an abandoned check: %v", err)
	}

	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, password[3:11]) {
			t.Fatalf("the password was logged: %s", line)
		}
	}
}

// requireGroupGone waits until no process of process group pgid runs.
func requireGroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := groupMembers(pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of the helper's group outlived the check: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []string {
	ents, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// state ppid pgrp
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			out = append(out, s[:i+1])
		}
	}
	return out
}

// runHelper runs the real helper as cred with stdin and returns its
// stdout and exit status.
func runHelper(t *testing.T, helper string, cred *syscall.Credential, stdin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, helper, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// The helper as an attacker of the same machine meets it: it takes no
// user name, refuses to run setuid, and answers a closed stdin (the agent
// hanging up) with ExitHangup.
func TestHelperRefuses(t *testing.T) {
	helper := realHelper(t)
	if out, code := runHelper(t, helper, nil, "", "--user", "root"); code != 2 || out != "" {
		t.Fatalf("--user: exit %d, %q", code, out)
	}
	if out, code := runHelper(t, helper, nil, ""); code != 3 || out != "" {
		t.Fatalf("hang-up: exit %d, %q", code, out)
	}
	if out, code := runHelper(t, helper, nil, "stepup-pam-helper 1 5\nx", "--service", "../../etc/shadow"); code != 2 || !strings.HasPrefix(out, "error bad PAM service name") {
		t.Fatalf("--service ../..: exit %d, %q", code, out)
	}
	if out, code := runHelper(t, helper, nil, "hello\n"); code != 2 || !strings.HasPrefix(out, "error ") {
		t.Fatalf("garbage request: exit %d, %q", code, out)
	}

	if os.Geteuid() != 0 {
		missing(t, "the setuid test needs root")
	}
	dir, err := os.MkdirTemp("", "stepup-suid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	suid := copyExe(t, helper, dir)
	if err := os.Chmod(suid, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Flags&0x2 /* ST_NOSUID */ != 0 {
		missing(t, "%s is mounted nosuid", dir)
	}
	out, code := runHelper(t, suid, &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}, "stepup-pam-helper 1 5\nhello")
	if code != 2 || !strings.Contains(out, "setuid") {
		t.Fatalf("setuid helper run by nobody: exit %d, %q", code, out)
	}
}

// TestNoNewPrivsRefusesEveryPassword pins what docs/systemd.md says: on
// Debian, under no_new_privs (systemd's NoNewPrivileges=), pam_unix's
// setgid unix_chkpwd cannot read /etc/shadow and the right password is
// refused like a wrong one. That is why the method reports itself
// unavailable there, which the second half checks with the real prctl.
func TestNoNewPrivsRefusesEveryPassword(t *testing.T) {
	name, password := testUser(t)
	setpriv := testenv.Program(t, "setpriv")
	helper := realHelper(t)
	req := "stepup-pam-helper 1 " + strconv.Itoa(len(password)) + "\n" + password
	for _, c := range []struct {
		nnp  bool
		want string
	}{{false, "ok\n"}, {true, "wrong\n"}} {
		args := []string{"--reuid=" + name, "--regid=" + name, "--clear-groups"}
		if c.nnp {
			args = append(args, "--no-new-privs")
		}
		args = append(args, helper, "--service", testService)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, setpriv, args...)
		// stdin stays open until the answer: a closed stdin is a hang-up.
		pr, pwr, _ := os.Pipe()
		cmd.Stdin = pr
		pwr.WriteString(req)
		out, _ := cmd.Output()
		pwr.Close()
		pr.Close()
		cancel()
		if string(out) != c.want {
			t.Fatalf("no_new_privs %v: the right password got %q, want %q", c.nnp, out, c.want)
		}
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe := copyExe(t, self, sharedBin(t))
	cmd := exec.Command(setpriv, "--reuid="+name, "--regid="+name, "--clear-groups", "--no-new-privs", exe, "-test.run=^TestNoNewPrivsProbe$", "-test.v")
	cmd.Env = []string{"STEPUP_PW_NNP_CHILD=1", "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNoNewPrivsProbe") {
		t.Fatalf("probe under no_new_privs: %v\n%s", err, out)
	}
}

// TestNoNewPrivsProbe is TestNoNewPrivsRefusesEveryPassword's child, run
// unprivileged under no_new_privs; it does nothing on its own.
func TestNoNewPrivsProbe(t *testing.T) {
	if os.Getenv("STEPUP_PW_NNP_CHILD") == "" {
		t.Skip("the child half of TestNoNewPrivsRefusesEveryPassword")
	}
	// A helper and a service file that exist: only no_new_privs is amiss.
	m := New(Config{Helper: "/usr/bin/true", Service: "common-auth"})
	if !noNewPrivs() {
		t.Fatal("noNewPrivs() is false under setpriv --no-new-privs")
	}
	if err := m.Unavailable(); err == nil || !strings.Contains(err.Error(), "no_new_privs") {
		t.Fatalf("under no_new_privs: %v", err)
	}
}
