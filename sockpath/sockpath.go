// Package sockpath holds the rules for the agent's socket path (DESIGN.md,
// "Where things live"): where the daemon listens and every client looks,
// and the checks a socket and its directory must pass, whether the agent
// binds the socket itself or inherits it from the service manager. It
// imports nothing of the agent, so that clients need not link the server.
package sockpath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Env names the environment variable that points clients at the agent's
// socket.
const Env = "STEPUP_AUTH_SOCK"

// Default is where the agent listens when neither -a nor STEPUP_AUTH_SOCK
// says otherwise: $XDG_RUNTIME_DIR/stepup/agent.sock, or
// $TMPDIR/stepup-$UID/agent.sock without XDG_RUNTIME_DIR.
func Default() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "stepup", "agent.sock")
	}
	tmp := os.Getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "stepup-"+strconv.Itoa(os.Getuid()), "agent.sock")
}

// Path is the socket clients use: $STEPUP_AUTH_SOCK, else Default.
func Path() string {
	if p := os.Getenv(Env); p != "" {
		return p
	}
	return Default()
}

// PrivateError says why a directory or socket is not private to this
// user. Callers word the fix for their interface (a flag, a unit file).
type PrivateError struct {
	Path     string
	NotDir   bool        // Path is not a directory
	OwnerUID int         // the owner, when it is not this user (else -1)
	Mode     fs.FileMode // the permissions, when others can write (else 0)
}

func (e *PrivateError) Error() string {
	switch {
	case e.NotDir:
		return fmt.Sprintf("%s is not a directory", e.Path)
	case e.OwnerUID >= 0:
		return fmt.Sprintf("%s belongs to uid %d, not to you (uid %d)", e.Path, e.OwnerUID, os.Getuid())
	}
	return fmt.Sprintf("others can write to %s (mode %04o)", e.Path, e.Mode)
}

// checkPrivate checks fi (of path) is owned by this user and writable by
// nobody else; a nil error or a *PrivateError.
func checkPrivate(path string, fi fs.FileInfo) *PrivateError {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return &PrivateError{Path: path, OwnerUID: int(st.Uid)}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return &PrivateError{Path: path, OwnerUID: -1, Mode: fi.Mode().Perm()}
	}
	return nil
}

// CheckDir checks that dir is a directory owned by this user that nobody
// else can write to. Its error is a *PrivateError, or the stat's.
func CheckDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return &PrivateError{Path: dir, NotDir: true, OwnerUID: -1}
	}
	if pe := checkPrivate(dir, fi); pe != nil {
		return pe
	}
	return nil
}

// CheckSocket checks that path is a socket owned by this user that nobody
// else can write to (connecting needs write permission, so a socket
// others can write to is one they can talk to).
func CheckSocket(path string) (fs.FileInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if pe := checkPrivate(path, fi); pe != nil {
		return fi, pe
	}
	return fi, nil
}

// AsPrivate returns err's *PrivateError, or nil.
func AsPrivate(err error) *PrivateError {
	var pe *PrivateError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}
