package stepup

import "golang.org/x/sys/unix"

// peerUID is the uid of the process that created the listening socket
// at the other end of fd (LOCAL_PEERCRED).
func peerUID(fd int) (int, bool, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return 0, false, err
	}
	return int(cred.Uid), true, nil
}
