package keychain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dbus "github.com/keybase/dbus"
	"github.com/keybase/go-keychain/secretservice"
	"github.com/stepup-agent/stepup-agent/internal/keyringtest"
	"github.com/stepup-agent/stepup-agent/internal/testenv"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testKeyring is a real gnome-keyring on a private bus of its own
// (internal/keyringtest), for one test.
type testKeyring struct {
	*keyringtest.Keyring
	t testing.TB
}

// startKeyring starts the bus and gnome-keyring and points
// DBUS_SESSION_BUS_ADDRESS at the bus for the rest of the test.
func startKeyring(t testing.TB) *testKeyring {
	t.Helper()
	requireProgram(t, "dbus-daemon")
	requireProgram(t, "gnome-keyring-daemon")
	k, err := keyringtest.Start(func(addr string) error {
		t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
		s, err := OpenSecretService(context.Background(), Options{Timeout: time.Second})
		if err == nil {
			s.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return &testKeyring{Keyring: k, t: t}
}

// startGnomeKeyring restarts the daemon over the same keyring files.
func (k *testKeyring) startGnomeKeyring() {
	k.t.Helper()
	if err := k.StartDaemon(); err != nil {
		k.t.Fatal(err)
	}
}

func (k *testKeyring) stopGnomeKeyring() { k.Kill() }

func (k *testKeyring) signal(sig syscall.Signal) {
	if err := k.Signal(sig); err != nil {
		k.t.Fatal(err)
	}
}

// secretTool runs secret-tool, an independent Secret Service client
// (libsecret), against the test bus.
func (k *testKeyring) secretTool(args ...string) string {
	t := k.t
	t.Helper()
	requireProgram(t, "secret-tool")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "secret-tool", args...)
	cmd.Env = k.Env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil && !(args[0] == "lookup" && errb.Len() == 0) {
		t.Fatalf("secret-tool %s: %v: %s", args, err, errb.String())
	}
	return out.String() + errb.String()
}

func openSS(t *testing.T, timeout time.Duration) *SecretService {
	t.Helper()
	s, err := OpenSecretService(context.Background(), Options{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSecretServiceConformance(t *testing.T) {
	startKeyring(t)
	open := func(t *testing.T) Store {
		s := openSS(t, 5*time.Second)
		// Each subtest starts from an empty keyring.
		ctx := context.Background()
		for _, kind := range append(Kinds, "extra") {
			names, _ := s.List(ctx, kind)
			for _, n := range names {
				s.Delete(ctx, kind, n)
			}
		}
		return s
	}
	reopen := func(t *testing.T) Store { return openSS(t, 5*time.Second) }
	testStore(t, open, reopen)
}

func TestOpenSecretServiceConformance(t *testing.T) {
	startKeyring(t)
	open := func(t *testing.T) Store {
		s, err := Open(context.Background(), "secretservice", Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	testStore(t, func(t *testing.T) Store {
		s := open(t)
		for _, kind := range Kinds {
			names, _ := s.List(context.Background(), kind)
			for _, n := range names {
				s.Delete(context.Background(), kind, n)
			}
		}
		return s
	}, open)
}

// Items are ordinary Secret Service items that another client sees: the
// attributes, the label, and the secret itself.
func TestSecretServiceVisibleToSecretTool(t *testing.T) {
	k := startKeyring(t)
	s := openSS(t, 5*time.Second)
	ctx := context.Background()
	if err := s.Put(ctx, KindCredential, "cred-1", []byte(`{"id":"cred-1"}`)); err != nil {
		t.Fatal(err)
	}
	out := k.secretTool("search", "--all", "service", ServiceAttr)
	for _, want := range []string{
		"label = stepup-agent credential/cred-1",
		"attribute.service = stepup-agent",
		"attribute.kind = credential",
		"attribute.name = cred-1",
		`secret = {"id":"cred-1"}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("secret-tool search lacks %q:\n%s", want, out)
		}
	}
	if got := k.secretTool("lookup", "service", ServiceAttr, "kind", KindCredential, "name", "cred-1"); got != `{"id":"cred-1"}` {
		t.Errorf("secret-tool lookup = %q", got)
	}
	// And the other way round: an item stored by secret-tool is read back.
	cmd := exec.Command("secret-tool", "store", "--label=x", "service", ServiceAttr, "kind", KindLimit, "name", "totp")
	cmd.Env = k.Env()
	cmd.Stdin = strings.NewReader("from-secret-tool")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("secret-tool store: %v: %s", err, out)
	}
	if got, err := s.Get(ctx, KindLimit, "totp"); err != nil || string(got) != "from-secret-tool" {
		t.Fatalf("Get of secret-tool's item = %q, %v", got, err)
	}
	s.Delete(ctx, KindCredential, "cred-1")
	if out := k.secretTool("search", "--all", "service", ServiceAttr, "kind", KindCredential); strings.Contains(out, "cred-1") {
		t.Fatalf("deleted item still visible:\n%s", out)
	}
}

// The library's GetSecret returns (nil, nil) when it cannot decrypt; the
// backend must turn that into an error, not an empty secret.
func TestSecretServiceUndecryptableIsAnError(t *testing.T) {
	startKeyring(t)
	s := openSS(t, 2*time.Second)
	ctx := context.Background()
	s.Put(ctx, KindKey, "signing", []byte("seed"))

	// The pitfall itself, in the library.
	svc, err := secretservice.NewService()
	if err != nil {
		t.Fatal(err)
	}
	defer libConn(svc).Close()
	sess, err := svc.OpenSession(secretservice.AuthenticationDHAES)
	if err != nil {
		t.Fatal(err)
	}
	items, err := svc.SearchCollection(secretservice.DefaultCollection, attrs(KindKey, "signing"))
	if err != nil || len(items) != 1 {
		t.Fatalf("search: %v, %v", items, err)
	}
	bad := *sess
	bad.AESKey = []byte("short") // not an AES key: decryption fails
	if got, err := svc.GetSecret(items[0], bad); got != nil || err != nil {
		t.Fatalf("library GetSecret with a bad key = %q, %v; the pitfall changed", got, err)
	}

	// The backend.
	s.mu.Lock()
	s.cur.session.AESKey = []byte("short")
	s.mu.Unlock()
	if got, err := s.Get(ctx, KindKey, "signing"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "decrypt") {
		t.Fatalf("Get with an undecryptable secret = %q, %v", got, err)
	}
	// The failure dropped the session; the next call opens a good one.
	if got, err := s.Get(ctx, KindKey, "signing"); err != nil || string(got) != "seed" {
		t.Fatalf("Get after a fresh session = %q, %v", got, err)
	}
}

// A locked collection: writing needs an unlock prompt, which a headless
// session refuses; the error must say so, quickly.
func TestSecretServiceLockedCollection(t *testing.T) {
	startKeyring(t)
	s := openSS(t, 5*time.Second)
	ctx := context.Background()

	svc, err := secretservice.NewService()
	if err != nil {
		t.Fatal(err)
	}
	defer libConn(svc).Close()
	if err := svc.LockItems([]dbus.ObjectPath{secretservice.DefaultCollection}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Put(ctx, KindToken, "t", []byte("x"))
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("Put into a locked collection = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Put into a locked collection took %s", d)
	}
	t.Logf("Put into a locked collection: %v (%s)", err, time.Since(start))
	if _, err := s.Get(ctx, KindToken, "t"); err != nil && !errors.Is(err, ErrNotFound) {
		t.Logf("Get from a locked collection: %v", err)
	}
	if err := s.Delete(ctx, KindToken, "t"); err != nil {
		t.Logf("Delete from a locked collection: %v", err)
	}
	// Unlocking needs a prompt; headless, it is dismissed at once.
	start = time.Now()
	var pd secretservice.PromptDismissedError
	if err := svc.Unlock([]dbus.ObjectPath{secretservice.DefaultCollection}); !errors.As(err, &pd) {
		t.Fatalf("Unlock = %v; want PromptDismissedError", err)
	}
	t.Logf("the unlock prompt was dismissed in %s", time.Since(start))
	if !strings.Contains(explain(fmt.Errorf("x: %w", pd)), "prompt was dismissed") {
		t.Fatal("explain does not say the prompt was dismissed")
	}
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("Ping of a locked collection = %v", err)
	}
	if _, err := OpenSecretService(ctx, Options{Timeout: time.Second}); err == nil {
		t.Fatal("OpenSecretService accepted a locked collection")
	}
}

// gnome-keyring killed mid-run: the store Open returns goes on in memory,
// reports it, and writes through (puts and deletes) when it is back.
func TestSecretServiceKilledMidRun(t *testing.T) {
	k := startKeyring(t)
	ctx := context.Background()
	core, logs := observer.New(zap.InfoLevel)
	st, err := Open(ctx, "secretservice", Options{Logger: zap.New(core), Timeout: time.Second, ProbeInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	av := st.(Availability)
	st.Put(ctx, KindKey, "signing", []byte("seed"))
	st.Put(ctx, KindToken, "doomed", []byte("x"))
	if !av.Available() {
		t.Fatal("not available at start")
	}

	k.stopGnomeKeyring() // SIGKILL
	start := time.Now()
	if err := st.Put(ctx, KindToken, "while-down", []byte("y")); err != nil {
		t.Fatalf("Put while the daemon is gone = %v", err)
	}
	st.Delete(ctx, KindToken, "doomed")
	if av.Available() {
		t.Fatal("Available() with the daemon gone")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("writes with the daemon gone took %s", d)
	}
	if got, err := st.Get(ctx, KindKey, "signing"); err != nil || string(got) != "seed" {
		t.Fatalf("Get while down = %q, %v", got, err)
	}
	if w := st.(Warner).Warning(); !strings.Contains(w, "not answering") {
		t.Fatalf("Warning() while down = %q", w)
	}
	time.Sleep(300 * time.Millisecond) // a few probes fail
	if n := logs.FilterMessageSnippet("not answering").Len(); n != 1 {
		t.Fatalf("outage logged %d times, want once", n)
	}

	k.startGnomeKeyring()
	testenv.WaitFor(t, "the store to see the daemon back", 10*time.Second, av.Available)
	if got := k.secretTool("lookup", "service", ServiceAttr, "kind", KindToken, "name", "while-down"); got != "y" {
		t.Fatalf("the write made while down was not written through: %q", got)
	}
	if got := k.secretTool("lookup", "service", ServiceAttr, "kind", KindToken, "name", "doomed"); got != "" {
		t.Fatalf("the delete made while down was not written through: %q", got)
	}
	if got := k.secretTool("lookup", "service", ServiceAttr, "kind", KindKey, "name", "signing"); got != "seed" {
		t.Fatalf("the signing key did not survive the daemon's restart: %q", got)
	}
	// Writes go straight through again.
	st.Put(ctx, KindToken, "after", []byte("z"))
	if got := k.secretTool("lookup", "service", ServiceAttr, "kind", KindToken, "name", "after"); got != "z" {
		t.Fatalf("write after recovery: %q", got)
	}
}

// gnome-keyring frozen with SIGSTOP: no call waits longer than the
// deadline, goroutines do not pile up, and the store recovers on SIGCONT.
func TestSecretServiceFrozen(t *testing.T) {
	k := startKeyring(t)
	ctx := context.Background()
	const timeout = 500 * time.Millisecond
	st, err := Open(ctx, "secretservice", Options{Timeout: timeout, ProbeInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	raw := openSS(t, timeout)
	st.Put(ctx, KindKey, "signing", []byte("seed"))

	k.signal(syscall.SIGSTOP)
	baseline := runtime.NumGoroutine()

	// The raw backend: each call returns by its deadline, even many at once.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cstart := time.Now()
			err := raw.Put(ctx, KindToken, fmt.Sprint("f", i), []byte("x"))
			if d := time.Since(cstart); d > timeout+300*time.Millisecond {
				errs <- fmt.Errorf("a call took %s with a %s deadline", d, timeout)
			}
			if !errors.Is(err, ErrUnavailable) {
				errs <- fmt.Errorf("Put to a frozen daemon = %v", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("20 concurrent calls to a frozen daemon returned in %s", time.Since(start))
	// No goroutine is left waiting on the bus for them.
	testenv.WaitFor(t, "goroutines to settle", 2*time.Second, func() bool { return runtime.NumGoroutine() <= baseline+2 })

	// The resilient store: one write waits for the deadline, then memory.
	start = time.Now()
	st.Put(ctx, KindToken, "frozen-1", []byte("1"))
	if d := time.Since(start); d > timeout+300*time.Millisecond {
		t.Fatalf("first write to a frozen daemon took %s", d)
	}
	start = time.Now()
	for i := range 10 {
		st.Put(ctx, KindToken, fmt.Sprint("frozen-more-", i), []byte("1"))
		st.Get(ctx, KindToken, "frozen-1")
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("writes while marked down took %s", d)
	}
	if st.(Availability).Available() {
		t.Fatal("Available() with a frozen daemon")
	}

	k.signal(syscall.SIGCONT)
	testenv.WaitFor(t, "recovery after SIGCONT", 10*time.Second, st.(Availability).Available)
	if got := k.secretTool("lookup", "service", ServiceAttr, "kind", KindToken, "name", "frozen-more-9"); got != "1" {
		t.Fatalf("a write made while frozen was not written through: %q", got)
	}
	// The raw backend reconnects too.
	if got, err := raw.Get(ctx, KindKey, "signing"); err != nil || string(got) != "seed" {
		t.Fatalf("raw Get after SIGCONT = %q, %v", got, err)
	}
}

// fakeDBusLaunch puts a dbus-launch on PATH that only leaves a mark, and
// returns the mark's path.
func fakeDBusLaunch(t *testing.T) string {
	dir := t.TempDir()
	mark := filepath.Join(dir, "ran")
	script := "#!/bin/sh\ntouch " + mark + "\nexit 1\n"
	os.WriteFile(filepath.Join(dir, "dbus-launch"), []byte(script), 0o755)
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return mark
}

func unsetenv(t *testing.T, key string) {
	t.Setenv(key, "")
	os.Unsetenv(key)
}

// Without DBUS_SESSION_BUS_ADDRESS the library runs dbus-launch (and a
// real one would leave a bus and a daemon behind); the backend must not.
func TestNoSessionBus(t *testing.T) {
	mark := fakeDBusLaunch(t)
	unsetenv(t, "DBUS_SESSION_BUS_ADDRESS")
	// The library's discovery of $XDG_RUNTIME_DIR/bus would find a real bus.
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())

	// The pitfall, in the library.
	if _, err := secretservice.NewService(); err == nil {
		t.Fatal("the library connected without a bus")
	}
	if _, err := os.Stat(mark); err != nil {
		t.Fatal("the library no longer runs dbus-launch without a bus; update docs/keychain.md")
	}
	os.Remove(mark)

	if _, err := OpenSecretService(context.Background(), Options{}); !errors.Is(err, ErrUnavailable) ||
		!strings.Contains(err.Error(), "DBUS_SESSION_BUS_ADDRESS") {
		t.Fatalf("OpenSecretService without a bus = %v", err)
	}
	if _, err := Open(context.Background(), "secretservice", Options{}); err == nil {
		t.Fatal("Open(secretservice) without a bus succeeded")
	}
	checkAutoFallsBack(t, "DBUS_SESSION_BUS_ADDRESS is not set")
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("the backend ran dbus-launch")
	}
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "autolaunch:")
	checkAutoFallsBack(t, "DBUS_SESSION_BUS_ADDRESS is not set")
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("the backend ran dbus-launch for autolaunch:")
	}
}

func TestDeadBus(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "no-bus"))
	checkAutoFallsBack(t, "no Secret Service answered")
}

func TestBusWithoutSecretService(t *testing.T) {
	k := startKeyring(t)
	k.stopGnomeKeyring()
	checkAutoFallsBack(t, "no Secret Service")
}

func TestAutoFrozenSecretService(t *testing.T) {
	k := startKeyring(t)
	k.signal(syscall.SIGSTOP)
	defer k.signal(syscall.SIGCONT)
	checkAutoFallsBack(t, "no Secret Service answered")
}

func TestAutoPicksSecretService(t *testing.T) {
	k := startKeyring(t)
	state := t.TempDir()
	st, err := Open(context.Background(), "auto", Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend() != "secretservice" || !st.(Availability).Available() || st.(Warner).Warning() != "" {
		t.Fatalf("auto = %s, available %v, warning %q", st.Backend(), st.(Availability).Available(), st.(Warner).Warning())
	}
	st.Close()
	if data, err := os.ReadFile(filepath.Join(state, RememberName)); err != nil || string(data) != "secretservice\n" {
		t.Fatalf("auto's choice remembered as %q, %v", data, err)
	}
	// Remembered: a later auto start without the Secret Service (an SSH
	// login) does not quietly switch to another store.
	k.stopGnomeKeyring()
	_, err = Open(context.Background(), "auto", Options{StateDir: state, Timeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "remembered in "+filepath.Join(state, RememberName)) {
		t.Fatalf("auto with the remembered secretservice gone: %v", err)
	}
	// An explicit flag overrides the remembered choice.
	st, err = Open(context.Background(), "file", Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
}

func checkAutoFallsBack(t *testing.T, why string) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	start := time.Now()
	state := t.TempDir()
	st, err := Open(context.Background(), "auto", Options{Logger: zap.New(core), AutoTimeout: 500 * time.Millisecond, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("auto took %s to fall back", d)
	}
	// Never memory: the file backend, which says it is a plain file.
	if st.Backend() != "file" {
		t.Fatalf("auto picked %s, want file", st.Backend())
	}
	w := st.(Warner).Warning()
	for _, want := range []string{"plain file", "not encrypted", filepath.Join(state, FileName)} {
		if !strings.Contains(w, want) {
			t.Errorf("auto's warning lacks %q: %q", want, w)
		}
	}
	if l := logs.FilterMessageSnippet("keychain auto: using the file backend").FilterMessageSnippet(why); l.Len() != 1 {
		t.Errorf("auto's fallback was not logged with %q: %v", why, logs.All())
	}
	if !st.(Availability).Available() {
		t.Error("the file backend reported unavailable")
	}
	if data, err := os.ReadFile(filepath.Join(state, RememberName)); err != nil || string(data) != "file\n" {
		t.Errorf("auto's choice remembered as %q, %v; want file", data, err)
	}
	t.Logf("auto fell back in %s: %s", time.Since(start), w)
}

// libConn must keep finding the library's connection (it is unexported).
func TestLibConnFound(t *testing.T) {
	startKeyring(t)
	svc, err := secretservice.NewService()
	if err != nil {
		t.Fatal(err)
	}
	c := libConn(svc)
	if c == nil || !c.Connected() {
		t.Fatal("libConn did not find the library's D-Bus connection")
	}
	c.Close()
}

// The session's own Secret Service, as scripts/test-in-session.sh starts it
// (dbus-run-session, gnome-keyring unlocked first): the same round trip
// with an independent client, on the bus a user's agent would use.
func TestSessionSecretService(t *testing.T) {
	if os.Getenv("STEPUP_TEST_SECRET_SERVICE") != "1" {
		t.Skip("STEPUP_TEST_SECRET_SERVICE is not 1: no session keyring started by scripts/test-in-session.sh")
	}
	requireProgram(t, "secret-tool")
	ctx := context.Background()
	s, err := OpenSecretService(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	name := fmt.Sprintf("test-%d", os.Getpid())
	if err := s.Put(ctx, KindReplay, name, []byte("session")); err != nil {
		t.Fatal(err)
	}
	defer s.Delete(ctx, KindReplay, name)
	out, err := exec.Command("secret-tool", "search", "--all", "service", ServiceAttr, "kind", KindReplay, "name", name).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "secret = session") {
		t.Fatalf("secret-tool search: %v\n%s", err, out)
	}
}

func BenchmarkSecretService(b *testing.B) {
	startKeyring(b)
	s, err := OpenSecretService(context.Background(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchStore(b, s)
}

func BenchmarkOpenSecretService(b *testing.B) {
	startKeyring(b)
	s, err := Open(context.Background(), "secretservice", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchStore(b, s)
}

func BenchmarkLoadSecretService(b *testing.B) {
	startKeyring(b)
	benchLoad(b, "secretservice", Options{})
}

// TestSecretServiceSessionLeadingZeroSecret: a DH-AES session whose shared
// secret begins with a zero byte (one session in 256) stores and reads
// secrets like any other. Its key used to differ from gnome-keyring's (the
// library hashed the secret without its leading zeros), so the put was
// refused and a get did not decrypt: the agent then could not start on a
// sound keychain (the chaos loop's "did not start again").
func TestSecretServiceSessionLeadingZeroSecret(t *testing.T) {
	startKeyring(t)
	s := openSS(t, 5*time.Second)
	svc, err := secretservice.NewService()
	if err != nil {
		t.Fatal(err)
	}
	c := &ssConn{svc: svc, conn: libConn(svc)}
	for i := 0; i < 4000; i++ {
		sess, n, err := openDHSession(c.conn, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if n == 128 {
			svc.CloseSession(sess)
			continue
		}
		t.Logf("session %d: the shared secret has %d significant bytes of 128", i+1, n)
		c.session = sess
		s.mu.Lock()
		old := s.cur
		s.cur = c
		s.mu.Unlock()
		if old != nil {
			old.close()
		}
		ctx := context.Background()
		want := []byte(`{"a":"leading zero"}`)
		if err := s.Put(ctx, "test", "lz", want); err != nil {
			t.Fatalf("put on that session: %v", err)
		}
		if s.cur != c {
			t.Fatal("the put dropped the session (it was refused and tried again on a new one)")
		}
		got, err := s.Get(ctx, "test", "lz")
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("get on that session: %q, %v", got, err)
		}
		return
	}
	t.Fatal("no session in 4000 had a shared secret with a leading zero byte")
}

// TestSecretServiceGetAll: a whole kind read at once (the agent's start)
// holds what item-by-item reads give, and nothing of other kinds.
func TestSecretServiceGetAll(t *testing.T) {
	startKeyring(t)
	s := openSS(t, 5*time.Second)
	ctx := context.Background()
	want := map[string][]byte{}
	for i := 0; i < 200; i++ { // past the bus's 128 pending replies a connection
		n := fmt.Sprintf("t%02d", i)
		d := []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("x", i)))
		if err := s.Put(ctx, "bulk", n, d); err != nil {
			t.Fatal(err)
		}
		want[n] = d
	}
	if err := s.Delete(ctx, "bulk", "t07"); err != nil {
		t.Fatal(err)
	}
	delete(want, "t07")
	if err := s.Put(ctx, "other", "t01", []byte("not bulk")); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAll(ctx, "bulk")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("GetAll: %d items, want %d", len(got), len(want))
	}
	for n, d := range want {
		if !bytes.Equal(got[n], d) {
			t.Errorf("GetAll[%s] = %q, want %q", n, got[n], d)
		}
		one, err := s.Get(ctx, "bulk", n)
		if err != nil || !bytes.Equal(one, d) {
			t.Errorf("Get(%s) = %q, %v", n, one, err)
		}
	}
	if empty, err := s.GetAll(ctx, "none"); err != nil || len(empty) != 0 {
		t.Errorf("GetAll of an empty kind: %v, %v", empty, err)
	}
}
