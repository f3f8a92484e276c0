package lockwatch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// systemd-logind's D-Bus API (org.freedesktop.login1(5)).
const (
	login1Name   = "org.freedesktop.login1"
	login1Path   = dbus.ObjectPath("/org/freedesktop/login1")
	managerIface = "org.freedesktop.login1.Manager"
	sessionIface = "org.freedesktop.login1.Session"
	propsIface   = "org.freedesktop.DBus.Properties"
	busName      = "org.freedesktop.DBus"
)

// Run follows logind until ctx is done, calling h on sleep, resume, screen
// lock and unlock. It connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS,
// else the default socket) and returns an error at once when it cannot;
// once connected it reconnects by itself if the bus goes away, and returns
// nil when ctx is done. When logind is not running it waits for it.
func Run(ctx context.Context, log *zap.Logger, h Handler) error {
	if log == nil {
		log = zap.NewNop()
	}
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("cannot connect to the system bus to follow logind (sleep and screen lock will not lock the agent): %w", err)
	}
	backoff := time.Second
	for {
		w := &watcher{conn: conn, log: log, h: h, uid: uint32(os.Getuid()), sessions: map[dbus.ObjectPath]bool{}}
		err := w.run(ctx)
		w.releaseInhibitor()
		conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("lost the system bus; sleep and screen lock are not followed until it is back", zap.Error(err))
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			conn, err = dbus.ConnectSystemBus(dbus.WithContext(ctx))
			if err == nil {
				log.Info("system bus is back; following logind again")
				backoff = time.Second
				break
			}
		}
	}
}

type watcher struct {
	conn *dbus.Conn
	log  *zap.Logger
	h    Handler
	uid  uint32

	owner    string                   // unique name owning org.freedesktop.login1; "" when none
	sessions map[dbus.ObjectPath]bool // our graphical sessions
	inhibit  *os.File                 // the delay inhibitor, nil when not held
}

func (w *watcher) run(ctx context.Context) error {
	sigs := make(chan *dbus.Signal, 64)
	w.conn.Signal(sigs)
	defer w.conn.RemoveSignal(sigs)

	// Match rules first, then the owner: no signal falls in between. The
	// rules name login1 as the sender, so the bus does not route others'
	// broadcasts to us; signals addressed to us directly still arrive, and
	// handle checks their sender.
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender(busName), dbus.WithMatchInterface(busName), dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, login1Name)},
		{dbus.WithMatchSender(login1Name), dbus.WithMatchObjectPath(login1Path), dbus.WithMatchInterface(managerIface), dbus.WithMatchMember("PrepareForSleep")},
		{dbus.WithMatchSender(login1Name), dbus.WithMatchObjectPath(login1Path), dbus.WithMatchInterface(managerIface), dbus.WithMatchMember("SessionNew")},
		{dbus.WithMatchSender(login1Name), dbus.WithMatchObjectPath(login1Path), dbus.WithMatchInterface(managerIface), dbus.WithMatchMember("SessionRemoved")},
		{dbus.WithMatchSender(login1Name), dbus.WithMatchInterface(sessionIface), dbus.WithMatchMember("Lock")},
		{dbus.WithMatchSender(login1Name), dbus.WithMatchInterface(sessionIface), dbus.WithMatchMember("Unlock")},
		{dbus.WithMatchSender(login1Name), dbus.WithMatchInterface(propsIface), dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchArg(0, sessionIface)},
	}
	for _, r := range rules {
		if err := w.conn.AddMatchSignalContext(ctx, r...); err != nil {
			return fmt.Errorf("cannot subscribe to logind's signals: %w", err)
		}
	}
	var owner string
	err := call(ctx, w.conn.BusObject(), busName+".GetNameOwner", login1Name).Store(&owner)
	if err != nil {
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.NameHasNoOwner" {
			return fmt.Errorf("cannot ask who owns %s: %w", login1Name, err)
		}
		w.log.Warn("logind is not running; waiting for it (sleep and screen lock are not followed until then)")
	}
	w.setOwner(ctx, owner)

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.conn.Context().Done():
			return errors.New("the system bus connection closed")
		case s, ok := <-sigs:
			if !ok {
				return errors.New("the system bus connection closed")
			}
			w.handle(ctx, s)
		}
	}
}

// setOwner starts following a new owner of org.freedesktop.login1 (logind
// started or restarted): the old owner's inhibitor and sessions are gone.
func (w *watcher) setOwner(ctx context.Context, owner string) {
	w.releaseInhibitor()
	clear(w.sessions)
	w.owner = owner
	if owner == "" {
		return
	}
	w.log.Debug("following logind", zap.String("owner", owner))
	w.discover(ctx)
	w.takeInhibitor(ctx)
}

func (w *watcher) handle(ctx context.Context, s *dbus.Signal) {
	if s.Name == busName+".NameOwnerChanged" {
		if s.Sender != busName || len(s.Body) != 3 {
			w.ignore(s)
			return
		}
		name, _ := s.Body[0].(string)
		newOwner, _ := s.Body[2].(string)
		if name == login1Name && newOwner != w.owner {
			if newOwner == "" {
				w.log.Warn("logind left the system bus; waiting for it to come back")
			} else {
				w.log.Info("logind (re)started; following the new instance")
			}
			w.setOwner(ctx, newOwner)
		}
		return
	}
	// Only the current owner of org.freedesktop.login1 speaks for logind.
	if w.owner == "" || s.Sender != w.owner {
		w.ignore(s)
		return
	}
	switch s.Name {
	case managerIface + ".PrepareForSleep":
		start, ok := arg[bool](s, 0)
		if !ok || s.Path != login1Path {
			w.ignore(s)
			return
		}
		if start {
			w.log.Info("the machine is going to sleep: locking the agent")
			w.h.Lock(ReasonSleep)
			w.releaseInhibitor() // tokens are gone: let it sleep
			return
		}
		w.takeInhibitor(ctx)
		if w.anyLocked(ctx) {
			w.log.Info("resumed from sleep; the screen is locked, so the agent stays locked until it is unlocked")
			return
		}
		w.log.Info("resumed from sleep with no locked session: accepting prompts again (tokens stay revoked)")
		w.h.Unlock(ReasonResume)
	case managerIface + ".SessionNew", managerIface + ".SessionRemoved":
		if s.Path != login1Path {
			w.ignore(s)
			return
		}
		w.discover(ctx)
	case sessionIface + ".Lock":
		if w.sessions[s.Path] {
			w.log.Info("the screen is locking: locking the agent", zap.String("session", string(s.Path)))
			w.h.Lock(ReasonScreenLock)
		}
	case sessionIface + ".Unlock":
		if w.sessions[s.Path] {
			w.log.Info("the screen is unlocking: accepting prompts again (tokens stay revoked)", zap.String("session", string(s.Path)))
			w.h.Unlock(ReasonScreenUnlock)
		}
	case propsIface + ".PropertiesChanged":
		if !w.sessions[s.Path] || len(s.Body) != 3 {
			return
		}
		if iface, _ := s.Body[0].(string); iface != sessionIface {
			return
		}
		changed, _ := s.Body[1].(map[string]dbus.Variant)
		var locked, known bool
		if v, ok := changed["LockedHint"]; ok {
			locked, known = v.Value().(bool)
		} else if inv, _ := s.Body[2].([]string); slices.Contains(inv, "LockedHint") {
			v, err := w.sessionProp(ctx, s.Path, "LockedHint")
			if err != nil {
				w.log.Warn("cannot read LockedHint; locking to be safe", zap.Error(err))
				locked, known = true, true
			} else {
				locked, known = v.Value().(bool)
			}
		}
		if !known {
			return
		}
		if locked {
			w.log.Info("the session says it is locked: locking the agent", zap.String("session", string(s.Path)))
			w.h.Lock(ReasonScreenLock)
		} else {
			w.log.Info("the session says it is unlocked: accepting prompts again (tokens stay revoked)", zap.String("session", string(s.Path)))
			w.h.Unlock(ReasonScreenUnlock)
		}
	}
}

func (w *watcher) ignore(s *dbus.Signal) {
	w.log.Warn("ignoring a look-alike logind signal: its sender does not own org.freedesktop.login1",
		zap.String("signal", s.Name), zap.String("sender", s.Sender), zap.String("path", string(s.Path)), zap.String("owner", w.owner))
}

func arg[T any](s *dbus.Signal, i int) (T, bool) {
	var zero T
	if i >= len(s.Body) {
		return zero, false
	}
	v, ok := s.Body[i].(T)
	return v, ok
}

// sessionEntry is one element of ListSessions' a(susso).
type sessionEntry struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

// discover finds this user's graphical sessions. A user service is not in
// a session (XDG_SESSION_ID, if any, is not the screen that locks), so it
// takes every session of its uid whose Type is x11, wayland or mir and
// whose Class is user. A session already locked locks the agent.
func (w *watcher) discover(ctx context.Context) {
	mgr := w.conn.Object(login1Name, login1Path)
	var list []sessionEntry
	if err := call(ctx, mgr, managerIface+".ListSessions").Store(&list); err != nil {
		w.log.Warn("cannot list logind sessions; only sleep is followed", zap.Error(err))
		return
	}
	found := map[dbus.ObjectPath]bool{}
	lockedNow := false
	for _, e := range list {
		if e.UID != w.uid {
			continue
		}
		var props map[string]dbus.Variant
		if err := call(ctx, w.conn.Object(login1Name, e.Path), propsIface+".GetAll", sessionIface).Store(&props); err != nil {
			w.log.Debug("cannot read a session's properties", zap.String("session", e.ID), zap.Error(err))
			continue
		}
		typ, _ := props["Type"].Value().(string)
		class, _ := props["Class"].Value().(string)
		if class != "user" || (typ != "x11" && typ != "wayland" && typ != "mir") {
			continue
		}
		found[e.Path] = true
		if l, _ := props["LockedHint"].Value().(bool); l && !w.sessions[e.Path] {
			lockedNow = true
		}
	}
	if !maps.Equal(found, w.sessions) {
		ids := make([]string, 0, len(found))
		for p := range found {
			ids = append(ids, string(p))
		}
		slices.Sort(ids)
		if len(ids) == 0 {
			w.log.Info("no graphical session of this user; following sleep only")
		} else {
			w.log.Info("following the screen lock of this user's graphical sessions", zap.Strings("sessions", ids))
		}
	}
	w.sessions = found
	if lockedNow {
		w.log.Info("a graphical session is locked: locking the agent")
		w.h.Lock(ReasonScreenLock)
	}
}

func (w *watcher) sessionProp(ctx context.Context, p dbus.ObjectPath, name string) (dbus.Variant, error) {
	var v dbus.Variant
	err := call(ctx, w.conn.Object(login1Name, p), propsIface+".Get", sessionIface, name).Store(&v)
	return v, err
}

// anyLocked reports whether one of our sessions says it is locked; when
// it cannot tell, it says yes (the agent stays locked: fail closed).
func (w *watcher) anyLocked(ctx context.Context) bool {
	for p := range w.sessions {
		v, err := w.sessionProp(ctx, p, "LockedHint")
		if err != nil {
			w.log.Warn("cannot read LockedHint; staying locked", zap.String("session", string(p)), zap.Error(err))
			return true
		}
		if l, _ := v.Value().(bool); l {
			return true
		}
	}
	return false
}

// takeInhibitor takes a logind "delay" inhibitor for sleep: logind waits
// (up to InhibitDelayMaxSec) until it is released, which the watcher does
// once the Handler's Lock has returned.
func (w *watcher) takeInhibitor(ctx context.Context) {
	if w.inhibit != nil || w.owner == "" {
		return
	}
	var fd dbus.UnixFD
	err := call(ctx, w.conn.Object(login1Name, login1Path), managerIface+".Inhibit",
		"sleep", "stepup-agent", "revoke elevated tokens before sleep", "delay").Store(&fd)
	if err != nil {
		w.log.Warn("cannot take a sleep delay inhibitor; the machine may sleep before the tokens are revoked", zap.Error(err))
		return
	}
	unix.CloseOnExec(int(fd)) // prompt programs must not keep it
	w.inhibit = os.NewFile(uintptr(fd), "logind-inhibitor")
}

func (w *watcher) releaseInhibitor() {
	if w.inhibit != nil {
		w.inhibit.Close()
		w.inhibit = nil
	}
}

// callTimeout bounds each call to logind or the bus: a frozen logind must
// not stop the watcher from seeing the next signal.
const callTimeout = 5 * time.Second

// call makes one method call with callTimeout.
func call(ctx context.Context, obj dbus.BusObject, method string, args ...any) *dbus.Call {
	c, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return obj.CallWithContext(c, method, 0, args...)
}
