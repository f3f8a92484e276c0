// Package lockwatch tells the agent when the machine is about to sleep and
// when the user's screen locks or unlocks, so that no elevated token
// outlives the user's presence (docs/systemd.md, "Lock on sleep").
//
// On Linux it follows systemd-logind on the system bus: the Manager's
// PrepareForSleep signal, and the Lock and Unlock signals and the
// LockedHint property of the user's graphical sessions. A user service
// runs outside any session, so the watcher does not use XDG_SESSION_ID: it
// watches every graphical (x11, wayland, mir) session of its uid and finds
// them again when sessions come and go. It holds a logind "delay"
// inhibitor for sleep, so the machine waits until the tokens are gone.
//
// Any process on the system bus can emit a signal that looks like
// logind's, and can even address it to the agent alone; the watcher acts
// only on signals whose sender is the unique name that currently owns
// org.freedesktop.login1 (tracked through NameOwnerChanged).
//
// Elsewhere Run returns ErrUnsupported at once.
package lockwatch

import "errors"

// Handler is what the agent does on the watcher's events. Calls come one
// at a time from Run's goroutine; Lock should return once every token is
// revoked (the machine sleeps when it returns, or after logind's
// InhibitDelayMaxSec).
type Handler interface {
	// Lock revokes every token and refuses prompts until Unlock.
	Lock(reason string)
	// Unlock accepts prompts again; revoked tokens stay revoked.
	Unlock(reason string)
}

// Reasons passed to the Handler.
const (
	ReasonSleep        = "sleep"         // PrepareForSleep(true)
	ReasonScreenLock   = "screen-lock"   // Lock signal, or LockedHint became true
	ReasonScreenUnlock = "screen-unlock" // Unlock signal, or LockedHint became false
	ReasonResume       = "resume"        // PrepareForSleep(false) with no session locked
)

// ErrUnsupported is returned by Run where there is no logind to follow.
var ErrUnsupported = errors.New("lock on sleep and screen lock is not supported on this system")
