package stepup

import "golang.org/x/sys/unix"

// peerUID is the uid of the process that created the listening socket
// at the other end of fd (SO_PEERCRED).
func peerUID(fd int) (int, bool, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, false, err
	}
	return int(cred.Uid), true, nil
}
