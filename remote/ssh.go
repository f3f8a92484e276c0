// Package remote is what the agent knows of a caller that came through
// the remote socket (docs/remote.md): the local `ssh` process that
// forwards it, the destination the user typed, and the terminal and
// display that ssh runs in, where the prompt goes. What the remote side
// says of itself (client: {name, pid, host}) is a claim and is kept apart.
package remote

import (
	"strconv"
	"strings"
)

// Conn is the SSH connection a remote caller came through, as the agent
// reads it locally from the forwarding ssh process.
type Conn struct {
	// PID is the local ssh process (the peer of the remote socket).
	PID int
	// Destination is the host as the user typed it ("build-01",
	// "alice@build-01.example.com"); "" when the peer is not an ssh
	// client the agent recognises.
	Destination string
	// TTY is the terminal the ssh process runs in ("/dev/pts/3"), where
	// the prompt goes; "" when it has none (ssh -f, a ControlMaster in
	// the background).
	TTY string
	// Display is the ssh process's DISPLAY or WAYLAND_DISPLAY, the
	// desktop it was started from; used when it has no terminal.
	Display, WaylandDisplay string
}

// String names the connection for a prompt: "ssh build-01 (pid 4242)".
func (c Conn) String() string {
	if c.Destination == "" {
		return "an unrecognised forwarder (pid " + strconv.Itoa(c.PID) + ")"
	}
	return "ssh " + c.Destination + " (pid " + strconv.Itoa(c.PID) + ")"
}

// Claim is what a remote caller says of itself (the prompt methods'
// `client` param). It is shown as a claim, never used for binding.
type Claim struct {
	Name string `json:"name,omitempty"`
	PID  int    `json:"pid,omitempty"`
	Host string `json:"host,omitempty"`
}

// sshArgOpts are ssh's options that take an argument (ssh(1)'s synopsis,
// OpenSSH 9.x: "46AaCfGgKkMNnqsTtVvXxYy" take none).
const sshArgOpts = "BbcDEeFIiJLlmOoPpQRSWw"

// Destination returns the destination in an ssh command line (argv
// including argv[0]), and false when argv is not an ssh client's: the
// first argument that is neither an option nor an option's value.
func Destination(argv []string) (string, bool) {
	if len(argv) == 0 || !isSSH(argv[0]) {
		return "", false
	}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if a == "--" {
			if i+1 < len(argv) {
				return argv[i+1], true
			}
			return "", false
		}
		if len(a) < 2 || a[0] != '-' {
			return a, true
		}
		// A cluster of flags: the first one that takes an argument takes
		// the rest of the word, or the next word.
		for j := 1; j < len(a); j++ {
			if strings.IndexByte(sshArgOpts, a[j]) >= 0 {
				if j == len(a)-1 {
					i++ // the value is the next word
				}
				break
			}
		}
	}
	return "", false
}

func isSSH(argv0 string) bool {
	base := argv0
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	return base == "ssh"
}
