package agent

import (
	"context"
	"os"

	"github.com/stepup-agent/stepup-agent/peer"
)

// testCaller is the caller of the unit tests' requests: what ipc would
// read at accept for a program in a terminal, with a few ancestors.
var testCaller = &peer.Identity{
	UID: os.Getuid(), GID: os.Getgid(),
	Proc:       peer.Proc{PID: 4242, Start: 1000},
	Boot:       "boot-1",
	Executable: "/usr/bin/stepupctl",
	Session:    peer.LoginSession{Kind: peer.SessionTTY, ID: 34816},
	Parents:    []peer.Proc{{PID: 4000, Start: 900}, {PID: 3000, Start: 800}, {PID: 2000, Start: 700}, {PID: 1000, Start: 600}},
}

// callerCtx is a request context of testCaller.
func callerCtx() context.Context { return peer.NewContext(context.Background(), testCaller) }

// otherCaller returns a caller like testCaller with change applied.
func otherCaller(change func(*peer.Identity)) *peer.Identity {
	c := *testCaller
	c.Parents = append([]peer.Proc(nil), testCaller.Parents...)
	change(&c)
	return &c
}
