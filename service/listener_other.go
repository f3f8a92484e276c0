//go:build !linux

package service

import (
	"net"

	"go.uber.org/zap"
)

// Listener reports that the agent was not socket-activated: launchd's
// sockets need launch_activate_socket, which Go cannot call without cgo,
// so on macOS the agent binds its own socket (docs/launchd.md).
func Listener(log *zap.Logger) (net.Listener, bool, error) { return nil, false, nil }

// Listeners is Listener with the remote socket: never activated here.
func Listeners(log *zap.Logger, remotePath string) (main, remote net.Listener, activated bool, err error) {
	return nil, nil, false, nil
}
