//go:build unix

package service

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// CheckSocketPath checks a Unix socket that someone else created (the
// service manager, by socket activation) the way the agent checks the one
// it binds itself: the directory must be a directory owned by this user
// that nobody else can write to, and the socket must be a socket owned by
// this user that nobody else can write to (connecting needs write
// permission, so a socket others can write to is one they can talk to).
func CheckSocketPath(path string) error {
	if path == "" || path[0] == '@' {
		return fmt.Errorf("the inherited socket has no path in the file system (an abstract or unnamed socket); file permissions cannot protect it, so use ListenStream=%%t/stepup/agent.sock")
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("the inherited socket's path %q is not absolute", path)
	}
	uid := os.Getuid()
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("cannot check the socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
		return fmt.Errorf("refusing the inherited socket: its directory %s belongs to uid %d, not to you (uid %d); set DirectoryMode=0700 in the socket unit and put the socket under %%t", dir, st.Uid, uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("refusing the inherited socket: others can write to its directory %s (mode %04o); set DirectoryMode=0700 in the socket unit or chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	fi, err = os.Lstat(path)
	if err != nil {
		return fmt.Errorf("cannot check the inherited socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("refusing the inherited socket: %s is not a socket (mode %s)", path, fi.Mode())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
		return fmt.Errorf("refusing the inherited socket: %s belongs to uid %d, not to you (uid %d)", path, st.Uid, uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("refusing the inherited socket: others can connect to %s (mode %04o); set SocketMode=0600 in the socket unit", path, fi.Mode().Perm())
	}
	return nil
}
