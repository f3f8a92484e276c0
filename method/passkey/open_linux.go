package passkey

import "context"

// defaultOpener asks the desktop to open url with xdg-open.
func defaultOpener(ctx context.Context, url string) error { return runOpener(ctx, "xdg-open", url) }
