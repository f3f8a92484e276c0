//go:build linux

// Package fakelogind is test support: a private dbus-daemon configured like
// a system bus, and a fake systemd-logind (org.freedesktop.login1 Manager
// and Session objects) that tests drive to emit PrepareForSleep, Lock,
// Unlock and LockedHint changes, plus an Impostor that emits look-alike
// signals from a connection that does not own the name. Tests point the
// code under test at the bus with DBUS_SYSTEM_BUS_ADDRESS.
package fakelogind

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
)

// D-Bus names of systemd-logind.
const (
	Name         = "org.freedesktop.login1"
	Path         = dbus.ObjectPath("/org/freedesktop/login1")
	ManagerIface = "org.freedesktop.login1.Manager"
	SessionIface = "org.freedesktop.login1.Session"
)

const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <!-- Like the system bus, except that anyone may own any name, so the
       test can play logind. Signals, as on the real system bus, may be
       sent to anyone, broadcast or addressed. -->
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
`

// Bus is a private dbus-daemon.
type Bus struct {
	// Address is the bus address, for DBUS_SYSTEM_BUS_ADDRESS.
	Address string
	cmd     *exec.Cmd
}

// StartBus starts dbus-daemon with a system-bus-like configuration whose
// socket and config live in dir. Stop it with Close.
func StartBus(ctx context.Context, dir string) (*Bus, error) {
	sock := filepath.Join(dir, "system_bus_socket")
	conf := filepath.Join(dir, "system-bus.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(busConfig, sock)), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile", "--nosyslog", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &Bus{cmd: cmd}
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addr <- strings.TrimSpace(line)
	}()
	select {
	case a := <-addr:
		if a == "" {
			b.Close()
			return nil, errors.New("dbus-daemon printed no address")
		}
		b.Address = a
		return b, nil
	case <-ctx.Done():
		b.Close()
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		b.Close()
		return nil, errors.New("dbus-daemon did not start within 10s")
	}
}

// Close stops the dbus-daemon.
func (b *Bus) Close() error {
	if b.cmd.Process != nil {
		b.cmd.Process.Kill()
	}
	return b.cmd.Wait()
}

// Session is a fake logind session.
type Session struct {
	ID    string
	UID   uint32
	User  string
	Type  string // x11, wayland, tty, ...
	Class string // user, greeter, ...
	Path  dbus.ObjectPath
	l     *Logind
	props *prop.Properties
}

// Inhibitor is one Inhibit call and the pipe it handed out.
type Inhibitor struct {
	What, Who, Why, Mode string
	r, w                 *os.File
	ino                  uint64
}

// Logind is a fake systemd-logind on a bus.
type Logind struct {
	conn *dbus.Conn

	mu         sync.Mutex
	sessions   map[string]*Session
	inhibitors []*Inhibitor
}

// Start connects to the bus at address, takes org.freedesktop.login1 and
// exports the Manager.
func Start(address string) (*Logind, error) {
	conn, err := dbus.Connect(address)
	if err != nil {
		return nil, err
	}
	l := &Logind{conn: conn, sessions: map[string]*Session{}}
	if err := conn.Export(manager{l}, Path, ManagerIface); err != nil {
		conn.Close()
		return nil, err
	}
	reply, err := conn.RequestName(Name, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		conn.Close()
		return nil, fmt.Errorf("cannot own %s: %v (reply %d)", Name, err, reply)
	}
	return l, nil
}

// UniqueName is the fake's connection name (the owner of login1).
func (l *Logind) UniqueName() string { return l.conn.Names()[0] }

// Close drops the connection (and with it the name).
func (l *Logind) Close() error {
	l.mu.Lock()
	for _, in := range l.inhibitors {
		in.r.Close()
		in.w.Close()
	}
	l.inhibitors = nil
	l.mu.Unlock()
	return l.conn.Close()
}

// AddSession exports a session and emits SessionNew.
func (l *Logind) AddSession(id string, uid uint32, user, typ, class string) (*Session, error) {
	s := &Session{ID: id, UID: uid, User: user, Type: typ, Class: class, Path: Path + "/session/" + dbus.ObjectPath(hexEscape(id)), l: l}
	props, err := prop.Export(l.conn, s.Path, prop.Map{SessionIface: {
		"Id":         {Value: id, Emit: prop.EmitConst},
		"Name":       {Value: user, Emit: prop.EmitConst},
		"User":       {Value: userRef{uid, dbus.ObjectPath(fmt.Sprintf("%s/user/_%d", Path, uid))}, Emit: prop.EmitConst},
		"Type":       {Value: typ, Emit: prop.EmitConst},
		"Class":      {Value: class, Emit: prop.EmitConst},
		"Active":     {Value: true, Emit: prop.EmitTrue},
		"LockedHint": {Value: false, Emit: prop.EmitTrue},
	}})
	if err != nil {
		return nil, err
	}
	s.props = props
	l.mu.Lock()
	l.sessions[id] = s
	l.mu.Unlock()
	return s, l.conn.Emit(Path, ManagerIface+".SessionNew", id, s.Path)
}

// RemoveSession drops a session and emits SessionRemoved.
func (l *Logind) RemoveSession(id string) error {
	l.mu.Lock()
	s := l.sessions[id]
	delete(l.sessions, id)
	l.mu.Unlock()
	if s == nil {
		return fmt.Errorf("no session %s", id)
	}
	l.conn.Export(nil, s.Path, "org.freedesktop.DBus.Properties")
	return l.conn.Emit(Path, ManagerIface+".SessionRemoved", id, s.Path)
}

// PrepareForSleep emits the Manager's PrepareForSleep(start).
func (l *Logind) PrepareForSleep(start bool) error {
	return l.conn.Emit(Path, ManagerIface+".PrepareForSleep", start)
}

// Lock emits the session's Lock signal (loginctl lock-session).
func (s *Session) Lock() error { return s.l.conn.Emit(s.Path, SessionIface+".Lock") }

// Unlock emits the session's Unlock signal.
func (s *Session) Unlock() error { return s.l.conn.Emit(s.Path, SessionIface+".Unlock") }

// SetLockedHint sets LockedHint and emits PropertiesChanged (as logind does
// when the screen locker calls SetLockedHint).
func (s *Session) SetLockedHint(v bool) { s.props.SetMust(SessionIface, "LockedHint", v) }

// Inhibitors returns the Inhibit calls so far.
func (l *Logind) Inhibitors() []*Inhibitor {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Inhibitor(nil), l.inhibitors...)
}

// HeldBy reports whether process pid holds the inhibitor's descriptor. The
// fake keeps both ends of the pipe (godbus gives no hook to close its copy
// once the reply is sent), so it looks in /proc/PID/fd for the pipe rather
// than waiting for end of file; in its own process it discounts its two
// ends.
func (in *Inhibitor) HeldBy(pid int) bool {
	n := 0
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	want := fmt.Sprintf("pipe:[%d]", in.ino)
	for _, fd := range fds {
		if t, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && t == want {
			n++
		}
	}
	if pid == os.Getpid() {
		return n > 2
	}
	return n > 0
}

type userRef struct {
	UID  uint32
	Path dbus.ObjectPath
}

type sessionEntry struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

// manager is the exported org.freedesktop.login1.Manager.
type manager struct{ l *Logind }

func (m manager) ListSessions() ([]sessionEntry, *dbus.Error) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	out := []sessionEntry{}
	for _, s := range m.l.sessions {
		out = append(out, sessionEntry{s.ID, s.UID, s.User, "seat0", s.Path})
	}
	return out, nil
}

func (m manager) GetSession(id string) (dbus.ObjectPath, *dbus.Error) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	if s := m.l.sessions[id]; s != nil {
		return s.Path, nil
	}
	return "", dbus.NewError("org.freedesktop.login1.NoSuchSession", []any{"no session " + id})
}

func (m manager) Inhibit(what, who, why, mode string) (dbus.UnixFD, *dbus.Error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	var st syscall.Stat_t
	syscall.Fstat(int(r.Fd()), &st)
	in := &Inhibitor{What: what, Who: who, Why: why, Mode: mode, r: r, w: w, ino: st.Ino}
	fd := dbus.UnixFD(w.Fd())
	m.l.mu.Lock()
	m.l.inhibitors = append(m.l.inhibitors, in)
	m.l.mu.Unlock()
	return fd, nil
}

// Impostor is a connection that does not own org.freedesktop.login1 and
// emits signals that look like logind's.
type Impostor struct{ conn *dbus.Conn }

// NewImpostor connects to the bus at address.
func NewImpostor(address string) (*Impostor, error) {
	c, err := dbus.Connect(address)
	if err != nil {
		return nil, err
	}
	return &Impostor{conn: c}, nil
}

// UniqueName is the impostor's connection name.
func (im *Impostor) UniqueName() string { return im.conn.Names()[0] }

// Close drops the connection.
func (im *Impostor) Close() error { return im.conn.Close() }

// Emit broadcasts a look-alike signal and also addresses a copy to every
// other connection on the bus except those named in skip, which the bus
// delivers whatever their match rules say.
func (im *Impostor) Emit(path dbus.ObjectPath, name string, skip []string, args ...any) error {
	if err := im.conn.Emit(path, name, args...); err != nil {
		return err
	}
	var names []string
	if err := im.conn.BusObject().Call("org.freedesktop.DBus.ListNames", 0).Store(&names); err != nil {
		return err
	}
	i := strings.LastIndex(name, ".")
	for _, n := range names {
		if !strings.HasPrefix(n, ":") || n == im.conn.Names()[0] || contains(skip, n) {
			continue
		}
		msg := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:        dbus.MakeVariant(path),
			dbus.FieldInterface:   dbus.MakeVariant(name[:i]),
			dbus.FieldMember:      dbus.MakeVariant(name[i+1:]),
			dbus.FieldDestination: dbus.MakeVariant(n),
		}, Body: args}
		if len(args) > 0 {
			msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(args...))
		}
		if call := im.conn.Send(msg, nil); call.Err != nil {
			return call.Err
		}
	}
	// A round trip to the bus: once it answers, it has routed everything
	// sent before, so a signal the caller sends next arrives after these.
	return im.conn.BusObject().Call("org.freedesktop.DBus.GetId", 0).Err
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// hexEscape escapes a session id as logind does in object paths
// (sd_bus_path_encode: a leading digit and every byte but [A-Za-z0-9] as
// _XX, so session "1" is .../session/_31).
func hexEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			b.WriteString("_" + strconv.FormatUint(uint64(c), 16))
		}
	}
	return b.String()
}
