//go:build darwin && !cgo

package keychain

import (
	"context"
	"fmt"
)

func init() {
	openMacOS = func(ctx context.Context, opts Options) (Store, error) {
		return nil, fmt.Errorf("keychain backend macos needs cgo: this stepup-agent was built with CGO_ENABLED=0; " +
			"rebuild it with cgo, or use --keychain file")
	}
	openAuto = func(ctx context.Context, opts Options) (Store, error) {
		return autoFallback(ctx, opts, "this stepup-agent was built without cgo, so it cannot use the macOS Keychain; "+
			"rebuild it with cgo, or run it with --keychain file")
	}
}
