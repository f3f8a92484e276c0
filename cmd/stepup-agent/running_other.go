//go:build !linux

package main

import "net"

// peerPID is 0 where the platform does not give a peer's pid this way.
func peerPID(*net.UnixConn) int { return 0 }
