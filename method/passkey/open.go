package passkey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// The page's address is a secret: whoever loads it first gets the
// ceremony. A program's arguments are readable by every local user
// (/proc/PID/cmdline), so the address is never one: the browser is
// opened on a launcher, a private file (0600 in a 0700 directory of the
// user's, under $XDG_RUNTIME_DIR when it is usable) whose only content
// sends the browser on to the page. Its path may be seen by anyone; its
// content only by the user. The file is removed once the browser has
// loaded the page, and with its ceremony.

const launcherPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0;url={{.URL}}">
<title>stepup-agent passkey</title></head>
<body><p><a href="{{.URL}}">Continue to the stepup-agent passkey page</a></p></body></html>
`

// launchDir is the private directory of a Method's launcher files,
// created on first use.
type launchDir struct {
	mu   sync.Mutex
	path string
}

// privateBases are where the launcher directory may go, in order: the
// agent's own runtime directory ($XDG_RUNTIME_DIR/stepup, the only one a
// sandboxed service, such as the systemd unit's, may write to), then
// $XDG_RUNTIME_DIR, each when it is a directory of the user's that nobody
// else can enter; then the temporary directory. The launcher directory is
// 0700 wherever it is.
func privateBases() []string {
	var out []string
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		for _, c := range []string{filepath.Join(d, "stepup"), d} {
			if fi, err := os.Lstat(c); err == nil && fi.IsDir() && fi.Mode().Perm()&0o077 == 0 && ownedByUs(fi) {
				out = append(out, c)
			}
		}
	}
	return append(out, os.TempDir())
}

func ownedByUs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// dir returns the launcher directory, creating it when needed.
func (l *launchDir) dir() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.path != "" {
		if fi, err := os.Lstat(l.path); err == nil && fi.IsDir() {
			return l.path, nil
		}
	}
	var d string
	var err error
	for _, base := range privateBases() {
		if d, err = os.MkdirTemp(base, "stepup-passkey-"); err == nil {
			break
		}
	}
	if err != nil {
		return "", err
	}
	fi, err := os.Lstat(d)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || !ownedByUs(fi) {
		_ = os.RemoveAll(d)
		return "", fmt.Errorf("cannot make a private directory for the passkey page's launcher in %s", filepath.Dir(d))
	}
	l.path = d
	return d, nil
}

// write makes a launcher for url and returns its path.
func (l *launchDir) write(url string) (string, error) {
	d, err := l.dir()
	if err != nil {
		return "", err
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	p := filepath.Join(d, "passkey-"+hex.EncodeToString(b)+".html")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	_, err = io.WriteString(f, fill(launcherPage, "URL", url))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(p)
		return "", err
	}
	return p, nil
}

func (l *launchDir) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.path != "" {
		_ = os.RemoveAll(l.path)
		l.path = ""
	}
}

// runOpener runs a browser-opening program (xdg-open, open) with path,
// a launcher file (never the page's address). It waits up to the
// context's deadline for the program to exit: xdg-open and open return at
// once, but some setups exec the browser itself, which keeps running;
// then the browser is left alone and reaped when it exits.
func runOpener(ctx context.Context, prog string, path string) error {
	exe, err := exec.LookPath(prog)
	if err != nil {
		return fmt.Errorf("%s not found: %w", prog, err)
	}
	cmd := exec.Command(exe, path)
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
