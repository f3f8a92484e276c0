//go:build !linux

package ipc

import (
	"io"
	"net"
)

// newRawIO returns nc itself: raw system calls are a Linux optimization
// (rawio_linux.go).
func newRawIO(nc net.Conn) (r io.Reader, w io.Writer, raw bool) { return nc, nc, false }
