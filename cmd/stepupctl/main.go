// Command stepupctl is the command-line client of stepup-agent. Its verbs
// mirror the protocol (docs/protocol.md): check, prompt, token, verify,
// reset, status, jwks, enroll, credentials, exec, lock, unlock.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signalContext(os.Args[1:])
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
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
