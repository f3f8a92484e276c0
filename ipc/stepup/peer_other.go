//go:build !linux && !darwin

package stepup

// peerUID is not known here: the check is skipped.
func peerUID(fd int) (int, bool, error) { return 0, false, nil }
