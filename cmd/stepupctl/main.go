// Command stepupctl is the command-line client of stepup-agent. Its verbs
// mirror the protocol (docs/protocol.md): check, prompt, token, verify,
// reset, status, jwks, enroll, credentials, exec, lock, unlock.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
