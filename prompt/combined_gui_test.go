package prompt

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// The combined prompt (agent/combined.go) as pinentry-gtk-2 shows it: a
// code field while the fingerprint reader is armed. When the fingerprint
// wins, the agent cancels the prompt's context: the dialog closes and
// GetPIN returns at once. With -update it saves docs/img/prompt-combined.png.
func TestGUICombined(t *testing.T) {
	d := testDisplay(t)
	requireProgram(t, "xdotool")
	p := &pinentry{driver: "pinentry", program: requireProgram(t, "pinentry-gtk-2"), t: target{Display: d}, log: zaptest.NewLogger(t)}
	title := "stepup-agent combined"
	req := Request{
		Title: title,
		Description: "/usr/bin/stepupctl (pid 4242) asks to step up for wallet:export.\n" +
			"Method: fingerprint or totp\n" +
			"Touch the fingerprint reader, or enter the 6-digit code from your authenticator app.",
		Prompt:  "Code:",
		Timeout: 60 * time.Second,
	}
	ctx, dismiss := context.WithCancel(context.Background())
	ch := getPINAsync(ctx, p, req)
	win := findWindow(t, d, title)
	screenshot(t, d, win, "prompt-combined.png")
	start := time.Now()
	dismiss() // the fingerprint matched
	if r := wait(t, ch); r.err == nil || r.pin != "" {
		t.Fatalf("GetPIN after dismissal = %q, %v; want an error", r.pin, r.err)
	} else if !errors.Is(r.err, context.Canceled) && !errors.Is(r.err, ErrCancelled) {
		t.Logf("GetPIN after dismissal: %v", r.err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("the dialog took %v to close", time.Since(start))
	}
}
