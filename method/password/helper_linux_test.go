package password

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
)

// These tests run the method against fake helpers (shell scripts) that
// answer, crash, hang or spawn children the way a broken PAM stack could;
// pam_linux_test.go runs the real helper against the real PAM.

func pw(p string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"password": p})
	return b
}

// fakeHelper writes script as an executable helper in a private directory
// and returns a method that uses it, with a service file of its own.
func fakeHelper(t *testing.T, script string) *Method {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, HelperName)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "svc"), []byte("auth required pam_deny.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return New(Config{Service: "svc", Helper: p, ConfDirs: []string{conf}, Timeout: 10 * time.Second})
}

func wantCode(t *testing.T, err error, code int, contains string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != code || !strings.Contains(ae.Error(), contains) {
		t.Fatalf("err = %v, want %d containing %q", err, code, contains)
	}
}

func TestHelperAnswers(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, script string
		check        func(error) bool
	}{
		{"ok", "echo ok", func(err error) bool { return err == nil }},
		{"wrong", "echo wrong; exit 1", func(err error) bool { return errors.Is(err, method.ErrVerificationFailed) }},
		{"account expired", "echo account-expired; exit 1", func(err error) bool {
			return errors.Is(err, method.ErrVerificationFailed) && strings.Contains(err.Error(), "account has expired")
		}},
		{"password expired", "echo password-expired; exit 1", func(err error) bool {
			return errors.Is(err, method.ErrVerificationFailed) && strings.Contains(err.Error(), "passwd")
		}},
		// Fail closed: "ok" counts only with exit status 0.
		{"ok but failed", "echo ok; exit 1", isInternal("said ok")},
		{"error", "echo 'error pam_start: no such module'; exit 2", isInternal("no such module")},
		{"garbage", "echo 'yes, sure'", isInternal("not part of the protocol")},
		{"silent", "head -n 1 >/dev/null; exit 0", isInternal("without an answer")},
		{"crash", "kill -SEGV $$", isInternal("segmentation fault")},
		{"not runnable", "exec /nonexistent/interpreter", isInternal("exit status 127")},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := fakeHelper(t, c.script)
			if _, err := m.Complete(ctx, nil, nil, pw("secret")); !c.check(err) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func isInternal(contains string) func(error) bool {
	return func(err error) bool {
		var ae *api.Error
		return errors.As(err, &ae) && ae.Code == api.CodeInternal && strings.Contains(ae.Error(), contains) && ae.Data.Hint != ""
	}
}

// The password reaches the helper on stdin only: not on its command line
// (readable by every local user in /proc/PID/cmdline) nor in its
// environment, and the agent's environment is not passed on.
func TestPasswordOnlyOnStdin(t *testing.T) {
	out := filepath.Join(t.TempDir(), "seen")
	t.Setenv("STEPUP_SECRET_MARKER", "agent-env")
	m := fakeHelper(t, `{ echo "ARGV $*"; env | sed 's/^/ENV /'; head -c 34; } >`+out+`; echo ok`)
	if _, err := m.Complete(context.Background(), nil, nil, pw("s3cret pass")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	seen := string(b)
	for _, line := range strings.Split(seen, "\n") {
		if (strings.HasPrefix(line, "ARGV") || strings.HasPrefix(line, "ENV")) && strings.Contains(line, "s3cret") {
			t.Fatalf("the password is in the helper's argv or env: %q", line)
		}
	}
	if !strings.Contains(seen, "ARGV --service svc") || strings.Contains(seen, "agent-env") {
		t.Fatalf("helper saw:\n%s", seen)
	}
	if !strings.Contains(seen, "stepup-pam-helper 1 11\ns3cret pass") {
		t.Fatalf("the request on stdin:\n%s", seen)
	}
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// hangingHelper is a helper whose PAM stack hangs, with a child of its
// own (as pam_unix has unix_chkpwd); it records both pids in pidFile.
func hangingHelper(t *testing.T) (*Method, string) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	m := fakeHelper(t, `sleep 600 & echo $$ $! >`+pidFile+`.tmp; mv `+pidFile+`.tmp `+pidFile+`; wait`)
	return m, pidFile
}

func readPids(t *testing.T, pidFile string) []int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(pidFile); err == nil {
			var pids []int
			for _, f := range strings.Fields(string(b)) {
				n, _ := strconv.Atoi(f)
				pids = append(pids, n)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatal("the fake helper did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func requireGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d outlived the check", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A client that hangs up mid-check (its context is cancelled) gets
// ctx.Err() at once -- distinct from a wrong password -- and the helper
// and everything it started are killed.
func TestHangUpKillsHelper(t *testing.T) {
	m, pidFile := hangingHelper(t)
	ctx, cancel := context.WithCancel(context.Background())
	var helperPid int
	m.started = func(pid int) { helperPid = pid }
	done := make(chan error, 1)
	go func() {
		_, err := m.Complete(ctx, nil, nil, pw("secret"))
		done <- err
	}()
	pids := readPids(t, pidFile)
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || errors.Is(err, method.ErrVerificationFailed) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Complete did not return after the hang-up")
	}
	t.Logf("returned %v after the hang-up", time.Since(start))
	if pids[0] != helperPid {
		t.Fatalf("pids %v, helper %d", pids, helperPid)
	}
	requireGone(t, pids)
}

// A PAM stack that hangs is stopped at cfg.Timeout with a clear error,
// and the method keeps working.
func TestHangingModuleTimesOut(t *testing.T) {
	m, pidFile := hangingHelper(t)
	m.cfg.Timeout = 300 * time.Millisecond
	start := time.Now()
	_, err := m.Complete(context.Background(), nil, nil, pw("secret"))
	wantCode(t, err, api.CodeInternal, "did not answer within 300ms")
	if time.Since(start) > 3*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
	requireGone(t, readPids(t, pidFile))
	ok := fakeHelper(t, "echo ok")
	m.cfg.Helper = ok.cfg.Helper
	m.avail.Store(nil) // probe again, for the new helper
	if _, err := m.Complete(context.Background(), nil, nil, pw("secret")); err != nil {
		t.Fatalf("after a hung check: %v", err)
	}
}

// A helper that never reads its stdin and ignores the hang-up still ends
// with the caller's context.
func TestHelperIgnoringTermination(t *testing.T) {
	m := fakeHelper(t, `trap '' TERM HUP PIPE; exec sleep 600`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var pid int
	m.started = func(p int) { pid = p }
	if _, err := m.Complete(ctx, nil, nil, pw("secret")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	requireGone(t, []int{pid})
}

func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, m *Method, contains string) {
		t.Helper()
		if m.NeedsNoCredential() {
			t.Fatal("offered without a usable helper")
		}
		err := m.Unavailable()
		wantCode(t, err, api.CodeNotEnrolled, contains)
		if err.(*api.Error).Data.Hint == "" {
			t.Fatal("no hint")
		}
		_, _, serr := m.Start(ctx, method.StartRequest{})
		wantCode(t, serr, api.CodeNotEnrolled, contains)
		_, cerr := m.Complete(ctx, nil, nil, pw("x"))
		wantCode(t, cerr, api.CodeNotEnrolled, contains)
	}
	t.Run("configured path missing", func(t *testing.T) {
		m := fakeHelper(t, "echo ok")
		m.cfg.Helper = "/nonexistent/stepup-pam-helper"
		check(t, m, "/nonexistent/stepup-pam-helper")
	})
	t.Run("none next to the agent", func(t *testing.T) {
		m := fakeHelper(t, "echo ok")
		m.cfg.Helper = ""
		dir := t.TempDir()
		m.exe = func() (string, error) { return filepath.Join(dir, "bin", "stepup-agent"), nil }
		check(t, m, "not installed (looked for "+filepath.Join(dir, "bin", HelperName)+" and "+filepath.Join(dir, "libexec", "stepup-agent", HelperName))
		if !strings.Contains(m.Unavailable().(*api.Error).Data.Hint, "libpam0g-dev") {
			t.Fatal("the hint does not say how to build the helper")
		}
	})
	t.Run("writable by others", func(t *testing.T) {
		m := fakeHelper(t, "echo ok")
		os.Chmod(m.cfg.Helper, 0o777)
		check(t, m, "others can write")
	})
	t.Run("in a directory others can write", func(t *testing.T) {
		m := fakeHelper(t, "echo ok")
		os.Chmod(filepath.Dir(m.cfg.Helper), 0o777)
		check(t, m, "others can write")
	})
	t.Run("setuid", func(t *testing.T) {
		m := fakeHelper(t, "echo ok")
		os.Chmod(m.cfg.Helper, 0o755|os.ModeSetuid)
		check(t, m, "setuid")
	})
	t.Run("not executable", func(t *testing.T) {
		m := fakeHelper(t, "echo ok")
		os.Chmod(m.cfg.Helper, 0o644)
		check(t, m, "not executable")
	})
	t.Run("no_new_privs", func(t *testing.T) {
		m := fakeHelper(t, "echo ok")
		m.nnp = func() bool { return true }
		check(t, m, "no_new_privs")
		if !strings.Contains(m.Unavailable().(*api.Error).Data.Hint, "docs/systemd.md") {
			t.Fatal("the hint does not point at docs/systemd.md")
		}
	})
	t.Run("service file missing", func(t *testing.T) {
		m := fakeHelper(t, "echo ok")
		m.cfg.Service = "stepup-agent-no-such-service"
		check(t, m, "stepup-agent-no-such-service")
	})
}

func TestFoundNextToTheAgent(t *testing.T) {
	for _, rel := range []string{HelperName, filepath.Join("..", "libexec", "stepup-agent", HelperName)} {
		m := fakeHelper(t, "echo ok")
		root := t.TempDir()
		bin := filepath.Join(root, "bin")
		os.MkdirAll(filepath.Join(bin, filepath.Dir(rel)), 0o755)
		p := filepath.Join(bin, rel)
		b, _ := os.ReadFile(m.cfg.Helper)
		os.WriteFile(p, b, 0o755)
		m.cfg.Helper = ""
		m.exe = func() (string, error) { return filepath.Join(bin, "stepup-agent"), nil }
		if err := m.Unavailable(); err != nil || !m.NeedsNoCredential() {
			t.Fatalf("%s: %v", rel, err)
		}
		if _, err := m.Complete(context.Background(), nil, nil, pw("x")); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	m := New(Config{})
	if m.cfg.Service != DefaultService || m.cfg.Timeout != DefaultTimeout || m.Name() != api.Password {
		t.Fatal("defaults")
	}
	if a := m.Ask(nil); a.Field != "password" || !strings.Contains(a.Hint, "login password") {
		t.Fatalf("Ask = %+v", a)
	}
	if _, _, err := m.EnrollStart(context.Background(), method.EnrollParams{}); err == nil {
		t.Fatal("enrollment accepted")
	}
	if _, err := m.Complete(context.Background(), nil, nil, json.RawMessage(`{}`)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("no password: %v", err)
	}
	_ = syscall.Getpid
}
