//go:build unix

package policy

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkOwner refuses a policy file another user could have written: one
// owned by neither this user nor root, or writable by everyone. (Group
// write is allowed: Debian's per-user groups make it common and harmless.)
func checkOwner(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := uint32(os.Getuid()); st.Uid != uid && st.Uid != 0 {
		return fmt.Errorf("owned by uid %d, not by you (uid %d) or root: refusing a policy another user controls", st.Uid, uid)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return fmt.Errorf("writable by everyone (mode %04o): chmod o-w it", fi.Mode().Perm())
	}
	return nil
}
