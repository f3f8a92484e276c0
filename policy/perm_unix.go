//go:build unix

package policy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkOwner refuses a policy file that anyone but this user (or root)
// could have written: one owned by another uid, or writable by its group
// or by everyone. A group member could otherwise redirect email and SMS
// codes or drop the step-up a scope needs.
func checkOwner(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := uint32(os.Getuid()); st.Uid != uid && st.Uid != 0 {
		return fmt.Errorf("owned by uid %d, not by you (uid %d) or root: refusing a policy another user controls", st.Uid, uid)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		who := "its group"
		if perm&0o002 != 0 {
			who = "everyone"
		}
		return fmt.Errorf("writable by %s (mode %04o): refusing a policy others can change; chmod go-w it", who, perm)
	}
	return nil
}

// checkDirs refuses a policy whose directory lets someone else replace
// the file, as the socket's directory is checked: the file's directory
// (for the path as given and, when it goes through symbolic links, for
// the file it resolves to) must belong to this user or root and be
// writable by nobody else, unless it is sticky (others cannot rename or
// remove what is ours in it).
func checkDirs(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	dirs := []string{filepath.Dir(abs)}
	if real, err := filepath.EvalSymlinks(abs); err == nil && filepath.Dir(real) != dirs[0] {
		dirs = append(dirs, filepath.Dir(real))
	}
	uid := uint32(os.Getuid())
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Uid != uid && st.Uid != 0 {
			return fmt.Errorf("its directory %s belongs to uid %d, not to you (uid %d) or root: refusing a policy another user can replace", dir, st.Uid, uid)
		}
		if perm := fi.Mode().Perm(); perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("its directory %s can be written by others (mode %04o): refusing a policy others can replace; chmod go-w %s", dir, perm, dir)
		}
	}
	return nil
}
