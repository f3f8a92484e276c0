// Package ctl is stepupctl, the command-line client of stepup-agent: its
// verbs mirror the protocol (docs/protocol.md), its exit codes are
// DESIGN.md's. Two programs run it: stepupctl, and stepupctl-inspect,
// which adds the verbs that read this machine's files and services
// (InspectVerbs).
package ctl

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Main runs the command line of this process and exits with its code.
func Main(ext *Extension) {
	args := os.Args[1:]
	by, set := os.LookupEnv(handoffEnv)
	if set {
		// Nothing this run starts inherits it, and a hand-off's own
		// comes first (an empty one left in the environment would
		// shadow it: a child's getenv takes the first).
		os.Unsetenv(handoffEnv)
	}
	if ext == nil && len(args) > 0 && runsElsewhere(args[0]) {
		// Straight on to stepupctl-inspect, which takes the signals
		// (run would hand over too, after making a signal context).
		os.Exit(run(context.Background(), args, os.Stdin, os.Stdout, os.Stderr, nil, by))
	}
	ctx, stop := signalContext(args)
	code := run(ctx, args, os.Stdin, os.Stdout, os.Stderr, ext, by)
	stop()
	os.Exit(code)
}

// quickVerbs make one or two round trips and never prompt or touch the
// terminal.
var quickVerbs = map[string]bool{"check": true, "status": true, "jwks": true}

// quickGrace is how long a quick verb runs before it takes SIGINT and
// SIGTERM itself.
const quickGrace = 25 * time.Millisecond

// signalContext is cancelled by SIGINT or SIGTERM: a verb then dismisses
// its prompt, restores the terminal and exits 3 ("interrupted"). A quick
// verb installs the handlers only once it has run for quickGrace:
// signal.Notify starts a thread of its own, which was a tenth of a
// `stepupctl check` that ends in a millisecond; a signal before then
// ends it the default way (killed by the signal), which loses nothing
// since it holds nothing to restore.
func signalContext(args []string) (context.Context, func()) {
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if len(args) == 0 || !quickVerbs[args[0]] {
		return signal.NotifyContext(context.Background(), sigs...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	t := time.AfterFunc(quickGrace, func() {
		signal.Notify(ch, sigs...)
		go func() {
			select {
			case <-ch:
				cancel()
			case <-ctx.Done():
			}
		}()
	})
	return ctx, func() {
		t.Stop()
		signal.Stop(ch)
		cancel()
	}
}
