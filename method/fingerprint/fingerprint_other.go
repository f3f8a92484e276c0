//go:build !linux

// Package fingerprint is the fingerprint MFA method (amr "fpt"), through
// fprintd, which exists only on Linux: elsewhere New returns nil and the
// method is not offered.
package fingerprint

import (
	"time"

	"github.com/stepup-agent/stepup-agent/method"
)

// Name is the method's wire name.
const Name = "fingerprint"

// Unavailable says why New returns nil.
const Unavailable = "the fingerprint method uses fprintd, which runs only on Linux"

// Config tunes the method (unused here).
type Config struct {
	method.Deps
	Timeout  time.Duration
	MaxTries int
}

// New returns nil: there is no fprintd on this platform.
func New(Config) method.Method { return nil }
