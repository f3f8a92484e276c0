package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// listen binds the agent's socket at path safely: its directory is created
// 0700 when missing and must be owned by this user and writable by nobody
// else; a stale socket is dialled before it is removed, a live one is an
// error; the socket is created 0600.
func listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the socket directory %s: %w", dir, err)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another path with -a", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, errAgentRunning
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

// errAgentRunning: a live agent answers on the socket (the caller says
// which and how to stop it: alreadyRunning).
var errAgentRunning = errors.New("an agent is already listening")

// checkDir refuses a directory that another user owns or can write to.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("refusing to use %s for the socket: it belongs to uid %d, not to you (uid %d); choose another path with -a", dir, st.Uid, os.Getuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("refusing to use %s for the socket: others can write to it (mode %04o); chmod 700 it or choose another path with -a", dir, fi.Mode().Perm())
	}
	return nil
}
