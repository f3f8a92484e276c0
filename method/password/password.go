// Package password is the password verification method
// (re-authentication): the user's own OS login password, checked through
// PAM with the service file packaging/pam/stepup-agent (installed as
// /etc/pam.d/stepup-agent).
//
// The agent can check only the password of the user it runs as: PAM's
// pam_unix, run by an unprivileged process, asks the setgid helper
// unix_chkpwd, which checks only the caller's own password. Run as root,
// pam_unix reads /etc/shadow itself (so root could check anyone's; the
// method still asks only for the agent's user).
//
// It needs cgo (github.com/msteinert/pam/v2 wraps libpam). A build
// without cgo leaves the method out: New returns nil and the agent logs
// that password is not available.
//
// Payloads (DESIGN.md, "Verification methods"): no enrollment (the OS
// account is the credential); challenge {}; response {password}.
package password

import (
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// DefaultService is the PAM service name.
const DefaultService = "stepup-agent"

// DefaultTimeout bounds one PAM check (PAM modules can block: LDAP, a
// slow NSS, pam_faildelay).
const DefaultTimeout = 30 * time.Second

// Config configures the method. The zero value checks the agent's own
// user through the stepup-agent service.
type Config struct {
	// Service is the PAM service name (a file of that name in
	// /etc/pam.d).
	Service string
	// User is whose password is checked; empty means the user the agent
	// runs as (os/user.Current). Only tests set it.
	User string
	// Timeout bounds one check; DefaultTimeout when zero.
	Timeout time.Duration
	// ConfDirs are where the service file is looked for before PAM is
	// asked, so a missing file is a clear error rather than PAM's
	// fallback to its "other" service. Default /etc/pam.d, /usr/lib/pam.d.
	ConfDirs []string
}

// DefaultConfDirs are the directories Linux-PAM reads service files from.
var DefaultConfDirs = []string{"/etc/pam.d", "/usr/lib/pam.d"}

// serviceFile returns the path of the service's file, or an error that
// says how to install it.
func serviceFile(service string, dirs []string) (string, error) {
	if len(dirs) == 0 {
		dirs = DefaultConfDirs
	}
	for _, d := range dirs {
		p := filepath.Join(d, service)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", api.Errorf(api.CodeNotEnrolled, "the PAM service file %s cannot be read: %v", p, err)
		}
	}
	return "", api.Errorf(api.CodeNotEnrolled, "password checks need the PAM service file %s, which is missing",
		filepath.Join(dirs[0], service)).
		WithHint("install it: sudo install -m 644 packaging/pam/stepup-agent %s", filepath.Join(dirs[0], service))
}
