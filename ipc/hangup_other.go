//go:build !linux

package ipc

import "net"

// waitHangUp: without a way to tell a half-close from a hang-up here, the
// end of the client's input counts as a hang-up.
func waitHangUp(c net.Conn, done <-chan struct{}) {}

// hungUp cannot tell here; the reader's end of file does.
func hungUp(c net.Conn) bool { return false }
