package lockwatch

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/lockwatch/fakelogind"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// recorder is a Handler that records its calls and, on Lock, whether the
// sleep inhibitor was still held (it must be: tokens go before sleep).
type recorder struct {
	events chan string
	mu     sync.Mutex
	ld     *fakelogind.Logind
	heldOn []bool
}

func (r *recorder) Lock(reason string) {
	r.mu.Lock()
	if r.ld != nil {
		ins := r.ld.Inhibitors()
		r.heldOn = append(r.heldOn, len(ins) > 0 && ins[len(ins)-1].HeldBy(os.Getpid()))
	}
	r.mu.Unlock()
	r.events <- "lock:" + reason
}

func (r *recorder) Unlock(reason string) { r.events <- "unlock:" + reason }

func (r *recorder) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-r.events:
		if got != want {
			t.Fatalf("handler got %s; want %s", got, want)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("handler got nothing; want %s", want)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type env struct {
	bus  *fakelogind.Bus
	ld   *fakelogind.Logind
	rec  *recorder
	logs *observer.ObservedLogs
	sess *fakelogind.Session
	uid  uint32
	done chan error
}

// start runs a private system bus with a fake logind that has three
// sessions: our graphical one (1), our ssh one (2, tty) and another
// user's graphical one (3); then Run against it.
func start(t *testing.T) *env {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	bus, ld := fakelogind.StartTest(ctx, t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.Address)
	var err error
	e := &env{bus: bus, ld: ld, uid: uint32(os.Getuid()), done: make(chan error, 1)}
	if e.sess, err = ld.AddSession("1", e.uid, "me", "wayland", "user"); err != nil {
		t.Fatal(err)
	}
	if _, err := ld.AddSession("2", e.uid, "me", "tty", "user"); err != nil {
		t.Fatal(err)
	}
	if _, err := ld.AddSession("3", e.uid+1, "other", "x11", "user"); err != nil {
		t.Fatal(err)
	}
	e.rec = &recorder{events: make(chan string, 32), ld: ld}
	core, logs := observer.New(zapcore.DebugLevel)
	e.logs = logs
	go func() { e.done <- Run(ctx, zap.New(core), e.rec) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-e.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	waitUntil(t, "the watcher holds a sleep inhibitor", func() bool {
		ins := ld.Inhibitors()
		return len(ins) == 1 && ins[0].HeldBy(os.Getpid())
	})
	return e
}

func TestSleepAndScreenLock(t *testing.T) {
	e := start(t)
	in := e.ld.Inhibitors()[0]
	if in.What != "sleep" || in.Who != "stepup-agent" || in.Mode != "delay" || in.Why == "" {
		t.Errorf("inhibitor %+v; want sleep/stepup-agent/delay", in)
	}

	// Sleep: Lock runs while the inhibitor is held, then it is released.
	if err := e.ld.PrepareForSleep(true); err != nil {
		t.Fatal(err)
	}
	e.rec.expect(t, "lock:sleep")
	waitUntil(t, "the inhibitor is released", func() bool { return !in.HeldBy(os.Getpid()) })
	e.rec.mu.Lock()
	if len(e.rec.heldOn) != 1 || !e.rec.heldOn[0] {
		t.Errorf("inhibitor held during Lock: %v; want [true]", e.rec.heldOn)
	}
	e.rec.mu.Unlock()

	// Resume with no locked session: prompts again, and a new inhibitor.
	e.ld.PrepareForSleep(false)
	e.rec.expect(t, "unlock:resume")
	waitUntil(t, "a new inhibitor is taken", func() bool {
		ins := e.ld.Inhibitors()
		return len(ins) == 2 && ins[1].HeldBy(os.Getpid())
	})

	// loginctl lock-session / unlock-session.
	e.sess.Lock()
	e.rec.expect(t, "lock:screen-lock")
	e.sess.Unlock()
	e.rec.expect(t, "unlock:screen-unlock")

	// The screen locker's LockedHint.
	e.sess.SetLockedHint(true)
	e.rec.expect(t, "lock:screen-lock")
	// Sleeping and resuming while the screen is locked: stays locked.
	e.ld.PrepareForSleep(true)
	e.rec.expect(t, "lock:sleep")
	e.ld.PrepareForSleep(false)
	waitUntil(t, "the resume is handled", func() bool {
		return e.logs.FilterMessageSnippet("the screen is locked, so the agent stays locked").Len() == 1
	})
	e.sess.SetLockedHint(false)
	e.rec.expect(t, "unlock:screen-unlock") // not unlock:resume first
}

func TestOtherSessionsIgnored(t *testing.T) {
	e := start(t)
	if err := e.ld.RemoveSession("1"); err != nil {
		t.Fatal(err)
	}
	// Lock on our tty session, on another user's graphical session and on
	// a greeter mean nothing to us; then a new graphical session of ours
	// appears and its Lock counts.
	tty, _ := e.ld.AddSession("5", e.uid, "me", "tty", "user")
	other, _ := e.ld.AddSession("6", e.uid+1, "other", "wayland", "user")
	greeter, _ := e.ld.AddSession("7", e.uid, "me", "x11", "greeter")
	tty.Lock()
	other.Lock()
	other.SetLockedHint(true)
	greeter.Lock()
	s4, err := e.ld.AddSession("4", e.uid, "me", "x11", "user")
	if err != nil {
		t.Fatal(err)
	}
	s4.Lock()
	e.rec.expect(t, "lock:screen-lock")
	s4.Unlock()
	e.rec.expect(t, "unlock:screen-unlock")
}

// A look-alike signal from a connection that does not own
// org.freedesktop.login1, broadcast or addressed to the watcher, changes
// nothing.
func TestLookAlikeSignalsIgnored(t *testing.T) {
	e := start(t)
	im, err := fakelogind.NewImpostor(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	skip := []string{e.ld.UniqueName()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(im.Emit(fakelogind.Path, fakelogind.ManagerIface+".PrepareForSleep", skip, true))
	must(im.Emit(e.sess.Path, fakelogind.SessionIface+".Lock", skip))
	must(im.Emit(e.sess.Path, "org.freedesktop.DBus.Properties.PropertiesChanged", skip,
		fakelogind.SessionIface, map[string]any{"LockedHint": true}, []string{}))
	// A forged NameOwnerChanged claiming the impostor now owns login1.
	must(im.Emit("/org/freedesktop/DBus", "org.freedesktop.DBus.NameOwnerChanged", skip, fakelogind.Name, e.ld.UniqueName(), im.UniqueName()))
	must(im.Emit(fakelogind.Path, fakelogind.ManagerIface+".PrepareForSleep", skip, true))

	// The next event the handler sees is the real logind's.
	e.sess.Unlock()
	e.rec.expect(t, "unlock:screen-unlock")
	if n := e.logs.FilterMessageSnippet("look-alike").Len(); n < 5 {
		t.Errorf("%d look-alike signals logged; want the 5 addressed ones at least", n)
	}
	// The inhibitor is still held: the fake sleep did not release it.
	if !e.ld.Inhibitors()[0].HeldBy(os.Getpid()) {
		t.Error("a look-alike PrepareForSleep released the inhibitor")
	}
}

// When logind restarts, the watcher follows the new instance: its signals
// count, and a new inhibitor is taken from it.
func TestLogindRestart(t *testing.T) {
	e := start(t)
	e.ld.Close()
	ld2, err := fakelogind.Start(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer ld2.Close()
	e.rec.ld = nil
	s, err := ld2.AddSession("9", e.uid, "me", "x11", "user")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "an inhibitor from the new logind", func() bool {
		ins := ld2.Inhibitors()
		return len(ins) == 1 && ins[0].HeldBy(os.Getpid())
	})
	waitUntil(t, "the new session is followed", func() bool {
		return e.logs.FilterMessageSnippet("following the screen lock").FilterField(zap.Strings("sessions", []string{string(s.Path)})).Len() > 0
	})
	s.Lock()
	e.rec.expect(t, "lock:screen-lock")
	ld2.PrepareForSleep(true)
	e.rec.expect(t, "lock:sleep")
}
