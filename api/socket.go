package api

// The socket's location is part of the contract (DESIGN.md, "Where things
// live"): the daemon and every client find it the same way. It lives here
// so that clients need not link the server.

import (
	"os"
	"path/filepath"
	"strconv"
)

// EnvSocket names the environment variable that points clients at the
// agent's socket.
const EnvSocket = "STEPUP_AUTH_SOCK"

// DefaultSocketPath is where the agent listens when neither -a nor
// STEPUP_AUTH_SOCK says otherwise: $XDG_RUNTIME_DIR/stepup/agent.sock, or
// $TMPDIR/stepup-$UID/agent.sock without XDG_RUNTIME_DIR.
func DefaultSocketPath() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "stepup", "agent.sock")
	}
	tmp := os.Getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "stepup-"+strconv.Itoa(os.Getuid()), "agent.sock")
}

// SocketPath is the socket clients use: $STEPUP_AUTH_SOCK, else the default.
func SocketPath() string {
	if p := os.Getenv(EnvSocket); p != "" {
		return p
	}
	return DefaultSocketPath()
}
