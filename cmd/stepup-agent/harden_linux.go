package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// harden keeps the agent's memory (signing key, TOTP secrets, tokens) out
// of core files and away from other processes of the same user, as
// ssh-agent does: no core dumps, and not dumpable, so that /proc/PID/mem,
// ptrace and /proc/PID/environ are closed to processes without
// CAP_SYS_PTRACE even when they run as the same uid. docs/SECURITY.md
// says what this does and does not protect.
func harden() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("cannot turn off core dumps: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("cannot make the agent undumpable: %w", err)
	}
	return nil
}
