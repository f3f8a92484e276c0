//go:build unix && !linux

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// harden keeps the password out of core dumps.
func harden() {
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
}

// privateStdout moves the agent's stdout pipe to a private close-on-exec
// descriptor and points fd 1 at stderr.
func privateStdout() (*os.File, error) {
	fd, err := unix.FcntlInt(1, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, err
	}
	if err := unix.Dup2(2, 1); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "answer"), nil
}
