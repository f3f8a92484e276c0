package passkey

import "context"

// defaultOpener asks the desktop to open the launcher file path with xdg-open.
func defaultOpener(ctx context.Context, path string) error { return runOpener(ctx, "xdg-open", path) }
