//go:build !linux && !darwin

package peer

import "errors"

// ErrGone: the client exited while it was identified.
var ErrGone = errors.New("the client exited while it was being identified")

func credOf(fd int) (Cred, bool, error) { return Cred{}, false, nil }

func identify(fd int) (*Identity, error) {
	return nil, errors.New("peer credentials are not available on this platform")
}

// IdentifyPID is not available on this platform.
func IdentifyPID(pid int) (*Identity, error) {
	return nil, errors.New("process identities are not available on this platform")
}
