package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/internal/testenv"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
	"github.com/stepup-agent/stepup-agent/lockwatch/fakelogind"
)

// These tests run the real stepup-agent the way systemd runs it
// (docs/systemd.md): under Debian's systemd-socket-activate, which passes
// the listening socket (LISTEN_FDS, --fdname=agent) and, with -E, the
// NOTIFY_SOCKET and WATCHDOG_USEC a service manager would set; and
// against a fake systemd-logind on a private system bus.

type syncBuf = testenv.LockedBuffer

// notifyListener binds a NOTIFY_SOCKET and collects its datagrams.
func notifyListener(t *testing.T, path string) chan string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func waitDatagram(t *testing.T, ch chan string, what string, ok func(string) bool, log func() string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	var seen []string
	for {
		select {
		case m, open := <-ch:
			if !open {
				t.Fatalf("NOTIFY_SOCKET closed before %s; got %q", what, seen)
			}
			seen = append(seen, m)
			if ok(m) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %s on NOTIFY_SOCKET; got %q\n%s", what, seen, log())
		}
	}
}

func TestSocketActivatedAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	sa := stepuptest.RequireProgram(t, "systemd-socket-activate")
	bin := stepuptest.Build(t, "stepup-agent")
	dir, err := os.MkdirTemp("", "stepup") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := filepath.Join(dir, "run")
	sock := filepath.Join(run, "stepup", "agent.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	notify := notifyListener(t, filepath.Join(dir, "notify.sock"))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sa, "-l", sock, "--fdname=agent",
		"-E", "NOTIFY_SOCKET="+filepath.Join(dir, "notify.sock"),
		"-E", "WATCHDOG_USEC=1000000",
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
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()

	// The socket exists before the agent runs; the first connection
	// starts it, and the agent answers on the socket it was handed.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Lstat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate did not bind %s\n%s", sock, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := &stepup.Client{Socket: sock, Env: &api.PromptEnv{}}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status over the activated socket: %v\n%s", err, out)
	}
	if st.PID != cmd.Process.Pid || st.Socket != sock || st.Keychain.Backend != "memory" {
		t.Errorf("status pid %d socket %q backend %q; want pid %d (exec'd in place), %s, memory", st.PID, st.Socket, st.Keychain.Backend, cmd.Process.Pid, sock)
	}
	need, err := c.CheckStepUp(ctx, "wallet:export")
	if err != nil || !need.Required {
		t.Errorf("isStepUpRequired wallet:export = %+v, %v; want required", need, err)
	}

	ready := waitDatagram(t, notify, "READY=1", func(m string) bool { return strings.HasPrefix(m, "READY=1") }, out.String)
	if ready != "READY=1\nSTATUS=0 tokens held, keychain memory" {
		t.Errorf("READY datagram %q", ready)
	}
	// WATCHDOG_USEC=1s: a ping every 500ms, each after a status query.
	waitDatagram(t, notify, "WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" }, out.String)
	waitDatagram(t, notify, "a second WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" }, out.String)

	cmd.Process.Signal(syscall.SIGTERM)
	waitDatagram(t, notify, "STOPPING=1", func(m string) bool { return strings.HasPrefix(m, "STOPPING=1") }, out.String)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("agent exited with %v\n%s", waitErr, out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("agent did not exit on SIGTERM\n%s", out)
	}
	// The socket is systemd's: the agent leaves it for the next start.
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("the agent removed the inherited socket: %v", err)
	}
	if strings.Contains(out.String(), "export STEPUP_AUTH_SOCK") {
		t.Errorf("a socket-activated agent printed shell commands:\n%s", out)
	}
	if !strings.Contains(out.String(), "serving the inherited socket") {
		t.Errorf("no log line about the inherited socket:\n%s", out)
	}
}

// TestActivatedAgentRefusesOpenSocket: a socket others can connect to is
// refused, with a message that says what to fix.
func TestActivatedAgentRefusesOpenSocket(t *testing.T) {
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
	sock := filepath.Join(dir, "agent.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sa, "-l", sock, "--fdname=agent", "-E", "HOME="+dir, bin, "-D", "--keychain", "memory", "--prompter", "none")
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Lstat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	os.Chmod(sock, 0o666) // as SocketMode=0666 would
	if conn, err := net.Dial("unix", sock); err == nil {
		conn.Close()
	}
	err = cmd.Wait()
	if err == nil || !strings.Contains(out.String(), "others can connect to") {
		t.Fatalf("agent on a 0666 socket: %v\n%s", err, out)
	}
}

// TestLockOnSleepAndScreenLock runs the agent against a fake logind on a
// private system bus: sleep and screen lock revoke every token and make
// prompts fail with 4010 until unlock; look-alike signals from another
// connection change nothing.
func TestLockOnSleepAndScreenLock(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bus, ld := fakelogind.StartTest(ctx, t)
	uid := uint32(os.Getuid())
	sess, err := ld.AddSession("2", uid, "me", "x11", "user")
	if err != nil {
		t.Fatal(err)
	}

	a := stepuptest.Start(t, stepuptest.Options{Env: []string{"DBUS_SYSTEM_BUS_ADDRESS=" + bus.Address}})
	c := a.Client
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := st.PID
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s\n%s", what, a.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	inhibitors := func() int { return len(ld.Inhibitors()) }
	held := func(i int) bool { ins := ld.Inhibitors(); return len(ins) > i && ins[i].HeldBy(pid) }
	waitFor("the agent holds a sleep delay inhibitor", func() bool { return held(0) })

	a.EnrollTOTP(t, 1)
	stepUp := func() {
		t.Helper()
		if _, err := a.StepUp(ctx, []string{"wallet:sign"}); err != nil {
			t.Fatalf("step up: %v\n%s", err, a.Log())
		}
	}
	status := func() *stepup.Status {
		t.Helper()
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	lockedAndEmpty := func() bool { st := status(); return st.Locked && len(st.Tokens) == 0 }
	refused := func(when string) {
		t.Helper()
		_, err := c.PromptStepUpAuth(ctx, stepup.PromptOptions{Scopes: []string{"wallet:sign"}})
		if !errors.Is(err, api.ErrLocked) {
			t.Fatalf("%s: promptStepUpAuth = %v; want 4010 locked", when, err)
		}
		if _, err := c.StartVerification(ctx, api.TOTP, []string{"wallet:sign"}); !errors.Is(err, api.ErrLocked) {
			t.Fatalf("%s: startVerification = %v; want 4010 locked", when, err)
		}
		if _, err := c.GetToken(ctx, "wallet:sign"); err == nil {
			t.Fatalf("%s: getToken still answers", when)
		}
	}
	accepted := func(when string) {
		t.Helper()
		// The prompter is none: an unlocked agent answers 4009, not 4010.
		_, err := c.PromptStepUpAuth(ctx, stepup.PromptOptions{Scopes: []string{"wallet:sign"}})
		if errors.Is(err, api.ErrLocked) || !errors.Is(err, api.ErrNoPrompter) {
			t.Fatalf("%s: promptStepUpAuth = %v; want 4009 no_prompter (prompts accepted again)", when, err)
		}
	}

	// Look-alikes first: broadcast and addressed to the agent, from a
	// connection that does not own org.freedesktop.login1.
	stepUp()
	im, err := fakelogind.NewImpostor(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	skip := []string{ld.UniqueName()}
	for _, err := range []error{
		im.Emit(fakelogind.Path, fakelogind.ManagerIface+".PrepareForSleep", skip, true),
		im.Emit(sess.Path, fakelogind.SessionIface+".Lock", skip),
		im.Emit(sess.Path, "org.freedesktop.DBus.Properties.PropertiesChanged", skip, fakelogind.SessionIface, map[string]any{"LockedHint": true}, []string{}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor("the agent logs the three addressed look-alikes", func() bool {
		return strings.Count(a.Log(), "ignoring a look-alike logind signal") >= 3
	})
	if st := status(); st.Locked || len(st.Tokens) != 1 {
		t.Fatalf("after look-alike signals: locked %v, %d tokens; want unlocked with 1", st.Locked, len(st.Tokens))
	}
	if !held(0) {
		t.Fatal("a look-alike PrepareForSleep released the inhibitor")
	}

	// Sleep: tokens revoked before the inhibitor goes; prompts refused.
	ld.PrepareForSleep(true)
	waitFor("sleep locks the agent and revokes every token", lockedAndEmpty)
	waitFor("the inhibitor is released", func() bool { return !held(0) })
	refused("asleep")
	ld.PrepareForSleep(false)
	waitFor("resume with no locked session unlocks", func() bool { return !status().Locked })
	waitFor("a new inhibitor after resume", func() bool { return held(1) })
	accepted("after resume")
	if _, err := c.GetToken(ctx, "wallet:sign"); err == nil {
		t.Fatal("a token revoked at sleep came back after resume")
	}

	// Screen lock (Lock signal), unlock (Unlock signal).
	stepUp()
	sess.Lock()
	waitFor("screen lock locks the agent", lockedAndEmpty)
	refused("screen locked")
	sess.Unlock()
	waitFor("screen unlock unlocks the agent", func() bool { return !status().Locked })
	accepted("after screen unlock")

	// The screen locker's LockedHint.
	stepUp()
	sess.SetLockedHint(true)
	waitFor("LockedHint locks the agent", lockedAndEmpty)
	refused("LockedHint true")
	sess.SetLockedHint(false)
	waitFor("LockedHint false unlocks the agent", func() bool { return !status().Locked })
	accepted("LockedHint false")
	if n := inhibitors(); n != 2 {
		t.Errorf("%d inhibitors taken; want 2 (start, resume)", n)
	}

	// The audit log has the lock records with their reasons.
	b, err := os.ReadFile(filepath.Join(a.Dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"detail":"logind: sleep"`, `"detail":"logind: screen-lock"`, `"detail":"logind: resume"`, `"detail":"logind: screen-unlock"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("audit log lacks %s:\n%s", want, b)
		}
	}
}

// TestLockOnSleepFollowsPolicy: lockOnSleep false in the policy stops the
// watcher (its inhibitor is released and logind's signals are ignored);
// turning it on again by a reload starts it.
func TestLockOnSleepFollowsPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bus, ld := fakelogind.StartTest(ctx, t)
	a := stepuptest.Start(t, stepuptest.Options{Policy: "lockOnSleep: false\n", Env: []string{"DBUS_SYSTEM_BUS_ADDRESS=" + bus.Address}})
	st, err := a.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s\n%s", what, a.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(ld.Inhibitors()); n != 0 {
		t.Fatalf("lockOnSleep false, yet %d inhibitors taken", n)
	}
	ld.PrepareForSleep(true)
	time.Sleep(300 * time.Millisecond)
	if st, _ := a.Client.Status(ctx); st == nil || st.Locked {
		t.Fatal("lockOnSleep false, yet sleep locked the agent")
	}
	ld.PrepareForSleep(false)

	// Turn it on: the reload starts the watcher.
	if err := os.WriteFile(filepath.Join(a.Dir, "policy.yaml"), []byte("lockOnSleep: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the reload starts the watcher", func() bool {
		ins := ld.Inhibitors()
		return len(ins) == 1 && ins[0].HeldBy(st.PID)
	})
	ld.PrepareForSleep(true)
	waitFor("sleep locks the agent", func() bool { s, _ := a.Client.Status(ctx); return s != nil && s.Locked })
	ld.PrepareForSleep(false)
	waitFor("resume unlocks it", func() bool { s, _ := a.Client.Status(ctx); return s != nil && !s.Locked })

	// And off again: the inhibitor goes with the watcher.
	if err := os.WriteFile(filepath.Join(a.Dir, "policy.yaml"), []byte("lockOnSleep: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the reload stops the watcher", func() bool {
		for _, in := range ld.Inhibitors() {
			if in.HeldBy(st.PID) {
				return false
			}
		}
		return true
	})
}
