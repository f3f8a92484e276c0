package passkey

import "context"

// defaultOpener asks macOS to open the launcher file path with open(1).
func defaultOpener(ctx context.Context, path string) error { return runOpener(ctx, "open", path) }
