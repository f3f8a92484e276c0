// Package peer says who is at the other end of a Unix socket connection,
// from what the kernel reports rather than what the client claims, and
// decides which callers a token's binding admits (docs/binding.md).
//
// Cred reads the bare credentials (uid, gid, pid) of a connection; the Go
// client uses it to refuse an agent run by another user. Identify reads
// the whole caller identity once, when the server accepts a connection:
// the process (pid and start time, so that a reused pid is a different
// process), its executable, the script an interpreter runs, the login
// session and the parent chain. Nothing is read later, when the process
// may have handed its socket on or exec'd another program. Mode.Admits
// decides from two identities, without allocating, whether a token
// minted for one may be handed to the other.
package peer

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Cred is a connection's peer credentials as the kernel reports them
// (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS).
type Cred struct {
	UID, GID, PID int
}

// Proc names one process: its pid and its start time (clock ticks since
// boot on Linux, microseconds since the epoch on macOS). Two processes
// with one pid have different start times.
type Proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// SessionKind says where a login session's identity comes from.
type SessionKind string

// Session kinds, in the order they are tried (DESIGN.md, "Caller and
// action binding").
const (
	SessionAudit SessionKind = "audit" // /proc/PID/sessionid, set by pam_loginuid at login
	SessionTTY   SessionKind = "tty"   // the controlling terminal's device number, with its session leader's start time
	SessionSID   SessionKind = "sid"   // the kernel session id with its leader's start time
	SessionTree  SessionKind = "tree"  // no leader to read: the topmost ancestor in the same kernel session, by pid and start time
)

// LoginSession is a caller's login session. The zero LoginSession is unknown and
// equal to no other for binding.
type LoginSession struct {
	Kind SessionKind `json:"kind,omitempty"`
	ID   uint64      `json:"id,omitempty"`
	// Start is the session leader's start time (SessionSID and
	// SessionTTY), so a session id or a terminal number reused after its
	// leader died is another session; for SessionTree, ID and Start are
	// the pid and start time of the tree's topmost process.
	Start uint64 `json:"start,omitempty"`
}

// Known reports whether s names a session.
func (s LoginSession) Known() bool { return s.Kind != "" }

func (s LoginSession) String() string {
	switch s.Kind {
	case SessionAudit:
		return "login session " + strconv.FormatUint(s.ID, 10)
	case SessionTTY:
		return "terminal " + ttyName(s.ID)
	case SessionSID:
		return "session of pid " + strconv.FormatUint(s.ID, 10)
	case SessionTree:
		return "process tree of pid " + strconv.FormatUint(s.ID, 10)
	}
	return "unknown session"
}

// ttyName names a tty device number the way ps does (pts/3, tty2), or
// by its numbers.
func ttyName(dev uint64) string {
	major, minor := (dev>>8)&0xfff, (dev&0xff)|((dev>>12)&0xfff00)
	switch {
	case major >= 136 && major <= 143:
		return "pts/" + strconv.FormatUint((major-136)*256+minor, 10)
	case major == 4 && minor < 64:
		return "tty" + strconv.FormatUint(minor, 10)
	}
	return strconv.FormatUint(major, 10) + ":" + strconv.FormatUint(minor, 10)
}

// MaxParents bounds the parent chain Identify reads.
const MaxParents = 64

// Identity is the caller of a connection, read once at accept. Its
// exported fields are what the agent stores beside a token (as JSON) to
// decide later whom the token's binding admits.
type Identity struct {
	UID int `json:"uid"`
	GID int `json:"gid"`
	Proc
	// Boot is the kernel's boot id: start times count from boot, so a
	// process of an earlier boot is never this boot's.
	Boot string `json:"boot,omitempty"`
	// Executable is the program file (/proc/PID/exe); empty where the
	// platform does not say (macOS without cgo), and then client binding
	// acts as process binding.
	Executable string `json:"exe,omitempty"`
	// Script is, for an interpreter (python, node, perl, ruby, sh, bash,
	// ...), the absolute path of the script it runs: its first non-option
	// argument, resolved against its working directory, when that names a
	// regular file. The process's argv can be rewritten by the process:
	// the script names the caller, it proves nothing.
	Script  string       `json:"script,omitempty"`
	Session LoginSession `json:"session"`
	// Parents is the parent chain, nearest first, up to MaxParents, ending
	// before pid 1 (or where a parent had already gone).
	Parents []Proc `json:"parents,omitempty"`
	// Remote names the remote-socket connection (an SSH forwarding) the
	// caller came through; empty for a local caller. Tokens never cross
	// between different Remote values, whatever the binding.
	Remote string `json:"remote,omitempty"`
}

// Exe returns the caller's executable path ("" when unknown).
func (id *Identity) Exe() string { return id.Executable }

// Known reports whether id names a process (a token persisted before
// binding existed carries a zero Identity).
func (id *Identity) Known() bool { return id != nil && id.PID > 0 }

// DescendsFrom reports whether p is id's process or one of its ancestors.
func (id *Identity) DescendsFrom(p Proc) bool {
	if id.Proc == p {
		return true
	}
	for _, q := range id.Parents {
		if q == p {
			return true
		}
	}
	return false
}

// String is the display name for prompts and logs: Display.
func (id *Identity) String() string { return id.Display() }

// Display names the caller the way a person recognises it:
// "node ~/app/sign.mjs (pid 4242)", "stepupctl (pid 8151)". A program
// in a system directory is named by its file name, one elsewhere by its
// path (with ~ for the home directory), so that /tmp/x/stepupctl does not
// pass for stepupctl. Every part is shown quoted, with escapes, when it
// holds anything but printable characters, and cut to its last
// maxShown bytes.
func (id *Identity) Display() string { return id.display(false) }

// FullDisplay is Display with full paths: "/usr/bin/node
// /home/me/app/sign.mjs (pid 4242)".
func (id *Identity) FullDisplay() string { return id.display(true) }

func (id *Identity) display(full bool) string {
	var b strings.Builder
	if id.Executable != "" {
		exe := id.Executable
		if !full {
			exe = shortProgram(exe)
		}
		b.WriteString(displayPath(exe))
		if id.Script != "" {
			s := id.Script
			if !full {
				s = tilde(s)
			}
			b.WriteByte(' ')
			b.WriteString(displayPath(s))
		}
		b.WriteByte(' ')
		b.WriteString("(pid ")
	} else {
		b.WriteString("pid ")
	}
	b.WriteString(strconv.Itoa(id.PID))
	if id.Executable != "" {
		b.WriteByte(')')
	}
	if id.Remote != "" {
		b.WriteString(" through ")
		b.WriteString(displayPath(id.Remote))
	}
	return b.String()
}

// systemDirs hold programs named by their file name alone.
var systemDirs = []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/libexec", "/opt/homebrew/bin"}

func shortProgram(exe string) string {
	dir := filepath.Dir(exe)
	for _, d := range systemDirs {
		if dir == d {
			return filepath.Base(exe)
		}
	}
	return tilde(exe)
}

// home is the agent's home directory: the agent serves its own user only,
// so it is the caller's too.
var home = sync.OnceValue(func() string {
	h, _ := os.UserHomeDir()
	return filepath.Clean(h)
})

func tilde(p string) string {
	if home := home(); home != "" && home != "/" && home != "." && strings.HasPrefix(p, home+"/") {
		return "~" + p[len(home):]
	}
	return p
}

// maxShown is how much of a path Display shows.
const maxShown = 160

func displayPath(path string) string {
	cut := false
	if len(path) > maxShown {
		i := len(path) - maxShown
		for i < len(path) && !utf8.RuneStart(path[i]) {
			i++
		}
		path, cut = path[i:], true
	}
	if q := strconv.Quote(path); q[1:len(q)-1] != path {
		path = q
	}
	if cut {
		path = "…" + path
	}
	return path
}

// ReadCred reads the peer credentials of a Unix socket connection. known
// is false where the platform cannot tell.
func ReadCred(c net.Conn) (cred Cred, known bool, err error) {
	err = control(c, func(fd int) error {
		cred, known, err = credOf(fd)
		return err
	})
	return cred, known, err
}

// Identify reads the identity of the process at the other end of a Unix
// socket connection. Call it once, at accept. It fails when the
// credentials cannot be read or the process exited while it was read
// (its pid could then already name another process).
func Identify(c net.Conn) (*Identity, error) {
	var id *Identity
	err := control(c, func(fd int) error {
		var err error
		id, err = identify(fd)
		return err
	})
	return id, err
}

func control(c net.Conn, fn func(fd int) error) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity ctx carries, or nil.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(ctxKey{}).(*Identity)
	return id
}
