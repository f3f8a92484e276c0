//go:build !linux

package lockwatch

import (
	"context"

	"go.uber.org/zap"
)

// Run returns ErrUnsupported: on macOS the agent has no logind to follow
// (docs/launchd.md); stepupctl lock still works.
func Run(ctx context.Context, log *zap.Logger, h Handler) error { return ErrUnsupported }
