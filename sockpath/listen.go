//go:build unix

package sockpath

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrAgentRunning: a live agent answers on the socket (the caller says
// which and how to stop it).
var ErrAgentRunning = errors.New("an agent is already listening")

// Listen binds the agent's socket at path safely: its directory is created
// 0700 when missing and must be owned by this user and writable by nobody
// else; a stale socket is dialled before it is removed, a live one is an
// error (ErrAgentRunning); the socket is created 0600. Errors name the -a
// flag.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the socket directory %s: %w", dir, err)
	}
	if err := CheckDir(dir); err != nil {
		pe := AsPrivate(err)
		switch {
		case pe == nil || pe.NotDir:
			return nil, err
		case pe.OwnerUID >= 0:
			return nil, fmt.Errorf("refusing to use %s for the socket: it belongs to uid %d, not to you (uid %d); choose another path with -a", dir, pe.OwnerUID, os.Getuid())
		}
		return nil, fmt.Errorf("refusing to use %s for the socket: others can write to it (mode %04o); chmod 700 it or choose another path with -a", dir, pe.Mode)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another path with -a", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, ErrAgentRunning
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cannot remove the stale socket %s: %w", path, err)
		}
	}
	// 077, not 177: the umask is the process's, and a directory made by
	// another goroutine meanwhile must stay usable. The chmod below
	// makes the socket 0600.
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// CheckInherited checks a Unix socket that someone else created (the
// service manager, by socket activation) the way Listen checks the one it
// binds: a private directory, a private socket. Errors name the socket
// unit's settings.
func CheckInherited(path string) error {
	if path == "" || path[0] == '@' {
		return fmt.Errorf("the inherited socket has no path in the file system (an abstract or unnamed socket); file permissions cannot protect it, so use ListenStream=%%t/stepup/agent.sock")
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("the inherited socket's path %q is not absolute", path)
	}
	uid := os.Getuid()
	dir := filepath.Dir(path)
	if err := CheckDir(dir); err != nil {
		pe := AsPrivate(err)
		switch {
		case pe == nil:
			return fmt.Errorf("cannot check the socket directory: %w", err)
		case pe.NotDir:
			return err
		case pe.OwnerUID >= 0:
			return fmt.Errorf("refusing the inherited socket: its directory %s belongs to uid %d, not to you (uid %d); set DirectoryMode=0700 in the socket unit and put the socket under %%t", dir, pe.OwnerUID, uid)
		}
		return fmt.Errorf("refusing the inherited socket: others can write to its directory %s (mode %04o); set DirectoryMode=0700 in the socket unit or chmod 700 %s", dir, pe.Mode, dir)
	}
	fi, err := CheckSocket(path)
	if fi == nil {
		return fmt.Errorf("cannot check the inherited socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("refusing the inherited socket: %s is not a socket (mode %s)", path, fi.Mode())
	}
	if pe := AsPrivate(err); pe != nil {
		if pe.OwnerUID >= 0 {
			return fmt.Errorf("refusing the inherited socket: %s belongs to uid %d, not to you (uid %d)", path, pe.OwnerUID, uid)
		}
		return fmt.Errorf("refusing the inherited socket: others can connect to %s (mode %04o); set SocketMode=0600 in the socket unit", path, pe.Mode)
	}
	return nil
}
