package prompt

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// killGrace is how long a prompt program has to exit after SIGTERM before
// it gets SIGKILL. SIGTERM first: pinentry-curses restores the terminal on
// SIGTERM, SIGKILL leaves it raw.
var killGrace = 3 * time.Second

// timeoutGrace is how long past its own timeout (SETTIMEOUT, zenity
// --timeout) a prompt program may run before we end it: the program's
// timeout is the primary one, ours the backstop.
const timeoutGrace = 5 * time.Second

// command prepares a prompt program that ends with ctx: SIGTERM when ctx is
// done, SIGKILL only if it is still running killGrace later.
func command(ctx context.Context, path string, args []string, env []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = killGrace
	return cmd
}

// childEnv is the agent's environment with the variables that say where a
// prompt goes replaced by set (an empty value removes the variable).
func childEnv(set map[string]string) []string {
	drop := map[string]bool{
		"DISPLAY": true, "WAYLAND_DISPLAY": true, "TERM": true,
		"GPG_TTY": true, "PINENTRY_USER_DATA": true,
	}
	for k := range set {
		drop[k] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// stderrBuf keeps the first few KiB a prompt program writes to stderr, for
// diagnostics. Prompt programs never write the answer there.
type stderrBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *stderrBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 4096 - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func (b *stderrBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(cleanText(b.buf.String()))
}

// firstLine is a short summary of a program's stderr for an error message.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return truncate(s, 200)
}
