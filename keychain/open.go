package keychain

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// Options configure Open.
type Options struct {
	// StateDir is where the file backend keeps its file
	// ($XDG_STATE_HOME/stepup by default).
	StateDir string
	Logger   *zap.Logger
}

// Backends lists the names accepted by Open.
var Backends = []string{"auto", "secretservice", "macos", "file", "memory"}

// Open returns the named backend. "auto" picks the best one available on
// this machine (docs/keychain.md).
func Open(ctx context.Context, backend string, opts Options) (Store, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	switch backend {
	case "memory":
		return NewMemory(), nil
	case "auto", "":
		return openAuto(ctx, opts)
	case "secretservice", "macos", "file":
		return openPlatform(ctx, backend, opts)
	}
	return nil, fmt.Errorf("unknown keychain backend %q: use one of auto, secretservice, macos, file, memory", backend)
}

// openAuto and openPlatform are replaced by the platform backends.
var (
	openAuto = func(ctx context.Context, opts Options) (Store, error) {
		m := NewMemory()
		opts.Logger.Warn("no persistent keychain backend built in; tokens and credentials live in memory only")
		return m, nil
	}
	openPlatform = func(ctx context.Context, backend string, opts Options) (Store, error) {
		return nil, fmt.Errorf("keychain backend %q is not available in this build", backend)
	}
)
