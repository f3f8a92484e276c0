//go:build cgo

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
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/stepup-agent/stepup-agent/api"
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

func pw(p string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"password": p})
	return b
}

func TestPasswordThroughPAM(t *testing.T) {
	name, password := testUser(t)
	core, logs := observer.New(zap.DebugLevel)
	m := newPAM(method.Deps{Logger: zap.New(core)}, Config{Service: testService, User: name})
	ctx := context.Background()

	if !m.NeedsNoCredential() {
		t.Fatal("with its service file the method needs no credential")
	}
	st, ch, err := m.Start(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(ch); string(b) != "{}" {
		t.Fatalf("challenge %s", b)
	}
	if a := m.Ask(st); a.Field != "password" || !strings.Contains(a.Description, name) {
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
	// Another user's password does not pass for this user: PAM checks
	// the configured user only.
	other := newPAM(method.Deps{}, Config{Service: testService, User: "root"})
	if _, err := other.Complete(ctx, nil, nil, pw(password)); !errors.Is(err, method.ErrVerificationFailed) {
		t.Fatalf("the test user's password passed for root: %v", err)
	}

	// The deadline holds even while PAM sleeps on a failure.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = m.Complete(short, st, nil, pw("wrong-again"))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("deadline: err = %v after %v", err, time.Since(start))
	}
	// The abandoned transaction finishes in the background; the next
	// check waits for it and then works.
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

func TestMissingServiceFile(t *testing.T) {
	m := newPAM(method.Deps{}, Config{Service: "stepup-agent-no-such-service", ConfDirs: []string{t.TempDir()}})
	_, _, err := m.Start(context.Background(), nil)
	var ae *api.Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Error(), "stepup-agent-no-such-service") || ae.Data.Hint == "" {
		t.Fatalf("err = %v, want a clear error naming the file", err)
	}
	if _, err := m.Complete(context.Background(), nil, nil, pw("x")); !errors.As(err, &ae) {
		t.Fatalf("Complete without a service file: %v", err)
	}
	if m.NeedsNoCredential() {
		t.Fatal("without a service file the method must not be offered")
	}
}

func TestCurrentUserByDefault(t *testing.T) {
	m := newPAM(method.Deps{}, Config{})
	if m.user == "" || m.err != nil {
		t.Fatalf("user %q, err %v", m.user, m.err)
	}
	if m.cfg.Service != DefaultService || m.Name() != api.Password {
		t.Fatal("defaults")
	}
	if _, _, err := m.EnrollStart(context.Background(), method.EnrollParams{}); err == nil {
		t.Fatal("enrollment accepted")
	}
}
