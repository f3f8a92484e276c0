package main

import (
	"fmt"
	"net"
	"time"
)

// runningAgent reports whether an agent answers on socket, and its pid
// when the platform tells (0 otherwise).
func runningAgent(socket string) (pid int, running bool) {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	if uc, ok := c.(*net.UnixConn); ok {
		pid = peerPID(uc)
	}
	return pid, true
}

// alreadyRunning says that an agent serves socket already, how to use it
// from this shell and how to stop it. (stepup-agent -k only works in the
// shell that started it, where STEPUP_AGENT_PID is set.)
func alreadyRunning(o *options, pid int) error {
	use := fmt.Sprintf("STEPUP_AUTH_SOCK=%s; export STEPUP_AUTH_SOCK", shellQuote(o.socket))
	if useCsh(o) {
		use = fmt.Sprintf("setenv STEPUP_AUTH_SOCK %s", shellQuote(o.socket))
	}
	who, stop := "an agent", "stop it with: kill PID (stepupctl status shows its pid)"
	if pid > 0 {
		who = fmt.Sprintf("an agent (pid %d)", pid)
		stop = fmt.Sprintf("stop it with: kill %d", pid)
	}
	return fmt.Errorf("%s is already listening on %s\nhint: to use it from this shell: %s\nhint: to replace it, %s, then start stepup-agent again (or choose another socket with -a)", who, o.socket, use, stop)
}
