package password

import (
	"os"

	"golang.org/x/sys/unix"
)

// noNewPrivs reports whether the agent runs with no_new_privs (systemd's
// NoNewPrivileges= and every sandboxing option of a user unit set it):
// then setuid and setgid programs, pam_unix's unix_chkpwd among them, run
// without their privileges. Root needs none.
func noNewPrivs() bool {
	if os.Geteuid() == 0 {
		return false
	}
	v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	return err == nil && v == 1
}
