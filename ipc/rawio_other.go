//go:build !linux

package ipc

import (
	"io"
	"net"
	"time"
)

// newRawIO returns portable wrappers of nc: raw system calls are a Linux
// optimization (rawio_linux.go). before runs ahead of every read; a
// write fails after timeout without progress.
func newRawIO(nc net.Conn, before func(), timeout time.Duration) (r io.Reader, w io.Writer) {
	return &hookReader{nc: nc, before: before}, &progressWriter{nc: nc, timeout: timeout}
}

// setNoWait reports false: only Linux's raw reader reads without waiting.
func setNoWait(io.Reader, bool) bool { return false }
