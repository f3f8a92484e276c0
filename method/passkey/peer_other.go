//go:build !linux

package passkey

import (
	"errors"
	"net"
)

// peerUID cannot tell who is at the other end of a loopback TCP
// connection here: the page relies on its secret address and on the
// cookie that binds it to the browser that loaded it.
func peerUID(local, remote net.Addr) (int, error) {
	return -1, errors.New("no peer lookup on this platform")
}

const peerCheckAvailable = false
