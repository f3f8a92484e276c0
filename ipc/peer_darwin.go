package ipc

import (
	"golang.org/x/sys/unix"
)

func peerCred(fd int) (*Peer, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return nil, err
	}
	pid, _ := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	p := &Peer{PID: pid, UID: int(cred.Uid)}
	if cred.Ngroups > 0 {
		p.GID = int(cred.Groups[0])
	}
	return p, nil
}

// peerExe is not available without cgo (proc_pidpath) on macOS: policies
// that restrict scopes to clients fail closed there.
func peerExe(pid int) string { return "" }
