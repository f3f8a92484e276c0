//go:build !linux

package service

import "errors"

func journalSend(string, Priority, map[string]string) error {
	return errors.New("no journal on this system")
}

func journalStderr() bool { return false }
