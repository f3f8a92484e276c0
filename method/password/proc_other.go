//go:build unix && !linux

package password

import (
	"os"
	"syscall"
)

// sysProcAttr puts the helper in its own process group, so the agent can
// kill it with everything it started.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// killGroup kills the helper's process group.
func killGroup(p *os.Process) error {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		return p.Kill()
	}
	return nil
}
