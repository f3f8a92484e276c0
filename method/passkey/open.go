package passkey

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"
)

// runOpener runs a browser-opening program (xdg-open, open) with url. It
// waits up to the context's deadline for the program to exit: xdg-open and
// open return at once, but some setups exec the browser itself, which
// keeps running; then the browser is left alone and reaped when it exits.
func runOpener(ctx context.Context, prog string, url string) error {
	path, err := exec.LookPath(prog)
	if err != nil {
		return fmt.Errorf("%s not found: %w", prog, err)
	}
	cmd := exec.Command(path, url)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	wait := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w", prog, err)
		}
		return nil
	case <-time.After(wait):
		// Still running: it is (or became) the browser.
		return nil
	case <-ctx.Done():
		return errors.Join(ctx.Err(), errors.New(prog+" did not return"))
	}
}
