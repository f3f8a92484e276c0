package ipc

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// waitHangUp returns when the peer has closed its end entirely, or when
// done is closed. A client that only shut down its writing side (socat at
// the end of its input, `printf ... | socat`) has not hung up: its answers
// are still wanted. Linux reports POLLHUP on a Unix stream socket only when
// both directions are shut down.
func waitHangUp(c net.Conn, done <-chan struct{}) {
	if _, ok := c.(*net.UnixConn); !ok {
		return
	}
	for {
		select {
		case <-done:
			return
		default:
		}
		if hungUp(c) {
			return
		}
		select {
		case <-done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// hungUp reports whether the peer has closed its end entirely (or the
// connection cannot be polled any more).
func hungUp(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return true
	}
	hung := false
	cerr := raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		hung = err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	})
	return cerr != nil || hung
}
