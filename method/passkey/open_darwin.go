package passkey

import "context"

// defaultOpener asks macOS to open url with open(1).
func defaultOpener(ctx context.Context, url string) error { return runOpener(ctx, "open", url) }
