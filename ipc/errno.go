package ipc

import (
	"errors"
	"syscall"
)

// isFDExhausted reports whether err says the process (EMFILE) or the
// system (ENFILE) has no descriptor left.
func isFDExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
