//go:build !linux

package main

import (
	"fmt"
	"syscall"
)

// harden turns off core dumps, so the agent's secrets never land in a
// core file. (Linux also makes the process undumpable: harden_linux.go.)
func harden() error {
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("cannot turn off core dumps: %w", err)
	}
	return nil
}
