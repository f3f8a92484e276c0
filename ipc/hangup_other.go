//go:build !linux

package ipc

import "net"

// waitHangUp: without a way to tell a half-close from a hang-up here, the
// end of the client's input counts as a hang-up.
func waitHangUp(c net.Conn, done <-chan struct{}) {}
