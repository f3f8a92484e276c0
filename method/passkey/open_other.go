//go:build !linux && !darwin

package passkey

import (
	"context"
	"errors"
)

// defaultOpener cannot open a browser here; the prompt shows the URL.
func defaultOpener(ctx context.Context, path string) error {
	return errors.New("no browser opener on this platform")
}
