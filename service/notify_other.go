//go:build !linux

package service

import "time"

// launchd has no readiness protocol: nothing to send.
func sdNotify(string) (bool, error) { return false, nil }

func notifyEnabled() bool { return false }

func watchdogTimeout() (time.Duration, error) { return 0, nil }
