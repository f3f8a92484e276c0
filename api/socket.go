package api

import "github.com/stepup-agent/stepup-agent/sockpath"

// The socket's location is part of the contract (DESIGN.md, "Where things
// live"); its rules live in package sockpath. These names stay for the Go
// client's users.

// EnvSocket names the environment variable that points clients at the
// agent's socket.
const EnvSocket = sockpath.Env

// DefaultSocketPath is sockpath.Default.
func DefaultSocketPath() string { return sockpath.Default() }

// SocketPath is sockpath.Path: $STEPUP_AUTH_SOCK, else the default.
func SocketPath() string { return sockpath.Path() }
