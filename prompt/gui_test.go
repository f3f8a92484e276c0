package prompt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// These tests drive the real zenity and pinentry-gtk-2 on an X display
// (Xvfb) and answer them with xdotool as a user would. With -update they
// also save a screenshot of each prompt into docs/img
// (scripts/screenshots.sh).

type guiCase struct {
	name  string
	shot  string   // docs/img file name
	okKey []string // the keys that press OK in a confirmation
	newFn func(t *testing.T, d string) Prompter
}

var guiCases = []guiCase{
	{"zenity", "prompt-zenity.png", []string{"Return"}, func(t *testing.T, d string) Prompter {
		return &zenity{program: requireProgram(t, "zenity"), t: target{Display: d}, log: zaptest.NewLogger(t)}
	}},
	// pinentry-gtk-2 focuses Cancel in a confirmation.
	{"pinentry-gtk-2", "prompt-pinentry-gtk2.png", []string{"Tab", "Return"}, func(t *testing.T, d string) Prompter {
		return &pinentry{driver: "pinentry", program: requireProgram(t, "pinentry-gtk-2"), t: target{Display: d}, log: zaptest.NewLogger(t)}
	}},
}

// sampleRequest is what the agent shows for a TOTP step-up; the title is
// unique so xdotool finds this test's window.
func sampleRequest(title string) Request {
	return Request{
		Title: title,
		Description: "/usr/bin/stepupctl (pid 4242) asks to step up for wallet:export.\n" +
			"Reason: export_keys \\ backup\nMethod: totp",
		Prompt:  "TOTP code:",
		Timeout: 30 * time.Second,
	}
}

// findWindow waits for the visible window titled title.
func findWindow(t *testing.T, d, title string) string {
	t.Helper()
	out := x(t, d, "xdotool", "search", "--sync", "--onlyvisible", "--name", "^"+title+"$")
	ids := strings.Fields(out)
	return ids[len(ids)-1]
}

func screenshot(t *testing.T, d, win, name string) {
	t.Helper()
	if !*update {
		return
	}
	time.Sleep(700 * time.Millisecond) // let GTK finish drawing
	path := filepath.Join("..", "docs", "img", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	x(t, d, "import", "-window", win, "-border", path)
	t.Logf("saved %s", path)
}

func TestGUIGetPIN(t *testing.T) {
	for _, c := range guiCases {
		t.Run(c.name, func(t *testing.T) {
			d := testDisplay(t)
			requireProgram(t, "xdotool")
			p := c.newFn(t, d)
			title := "stepup-agent " + c.name + " pin"
			ch := getPINAsync(context.Background(), p, sampleRequest(title))
			win := findWindow(t, d, title)
			screenshot(t, d, win, c.shot)
			x(t, d, "xdotool", "windowfocus", "--sync", win)
			x(t, d, "xdotool", "type", "--delay", "30", "492039")
			x(t, d, "xdotool", "key", "Return")
			r := wait(t, ch)
			if r.err != nil || r.pin != "492039" {
				t.Fatalf("GetPIN = %q, %v", r.pin, r.err)
			}
		})
	}
}

func TestGUICancel(t *testing.T) {
	for _, c := range guiCases {
		t.Run(c.name, func(t *testing.T) {
			d := testDisplay(t)
			requireProgram(t, "xdotool")
			p := c.newFn(t, d)
			title := "stepup-agent " + c.name + " cancel"
			ch := getPINAsync(context.Background(), p, sampleRequest(title))
			win := findWindow(t, d, title)
			x(t, d, "xdotool", "windowfocus", "--sync", win)
			x(t, d, "xdotool", "key", "Escape")
			if r := wait(t, ch); !errors.Is(r.err, ErrCancelled) {
				t.Fatalf("GetPIN after Escape = %q, %v; want ErrCancelled", r.pin, r.err)
			}
		})
	}
}

func TestGUITimeout(t *testing.T) {
	for _, c := range guiCases {
		t.Run(c.name, func(t *testing.T) {
			d := testDisplay(t)
			p := c.newFn(t, d)
			req := sampleRequest("stepup-agent " + c.name + " timeout")
			req.Timeout = 2 * time.Second
			start := time.Now()
			_, err := p.GetPIN(context.Background(), req)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("GetPIN = %v, want ErrTimeout", err)
			}
			if d := time.Since(start); d > 2*time.Second+timeoutGrace-time.Second {
				t.Fatalf("the program's own timeout did not fire (%v)", d)
			}
		})
	}
}

func TestGUIConfirm(t *testing.T) {
	for _, c := range guiCases {
		t.Run(c.name, func(t *testing.T) {
			d := testDisplay(t)
			requireProgram(t, "xdotool")
			p := c.newFn(t, d)
			for _, answer := range []string{"Return", "Escape"} {
				title := "stepup-agent " + c.name + " confirm " + answer
				ch := make(chan error, 1)
				go func() { ch <- p.Confirm(context.Background(), sampleRequest(title)) }()
				win := findWindow(t, d, title)
				if answer == "Return" {
					screenshot(t, d, win, strings.TrimSuffix(c.shot, ".png")+"-confirm.png")
				}
				x(t, d, "xdotool", "windowfocus", "--sync", win)
				keys := []string{answer}
				if answer == "Return" {
					keys = c.okKey
				}
				x(t, d, "xdotool", append([]string{"key", "--delay", "100"}, keys...)...)
				err := wait(t, ch)
				if answer == "Return" && err != nil {
					t.Fatalf("Confirm after Return: %v", err)
				}
				if answer == "Escape" && !errors.Is(err, ErrCancelled) {
					t.Fatalf("Confirm after Escape: %v, want ErrCancelled", err)
				}
			}
		})
	}
}

// A client that hangs up: the dialog closes and its process is gone.
func TestGUIContextCancel(t *testing.T) {
	for _, c := range guiCases {
		t.Run(c.name, func(t *testing.T) {
			d := testDisplay(t)
			requireProgram(t, "xdotool")
			p := c.newFn(t, d)
			title := "stepup-agent " + c.name + " hangup"
			ctx, cancel := context.WithCancel(context.Background())
			ch := getPINAsync(ctx, p, sampleRequest(title))
			findWindow(t, d, title)
			prog := c.name
			if len(prog) > 15 {
				prog = prog[:15] // /proc's comm is 15 bytes
			}
			pid := waitChild(t, prog)
			cancel()
			if r := wait(t, ch); !errors.Is(r.err, context.Canceled) {
				t.Fatalf("GetPIN = %v, want context.Canceled", r.err)
			}
			if alive(pid) {
				t.Fatalf("%s (pid %d) still running", c.name, pid)
			}
		})
	}
}

// zenity with a display nobody serves exits 1, like Cancel; the selector
// never picks it then, and the driver reports it as no prompter.
func TestZenityNoDisplay(t *testing.T) {
	z := &zenity{program: requireProgram(t, "zenity"), t: target{Display: ":377"}, log: zaptest.NewLogger(t)}
	_, err := z.GetPIN(context.Background(), Request{Timeout: 5 * time.Second})
	if !errors.Is(err, ErrNoPrompter) {
		t.Fatalf("GetPIN on a dead display = %v, want ErrNoPrompter", err)
	}
}

// The wait-elsewhere prompt: one button; pressing it returns nil.
func TestGUIConfirmOneButton(t *testing.T) {
	for _, c := range guiCases {
		t.Run(c.name, func(t *testing.T) {
			d := testDisplay(t)
			requireProgram(t, "xdotool")
			p := c.newFn(t, d)
			req := sampleRequest("stepup-agent " + c.name + " one button")
			req.Description = "Waiting for your passkey in the browser."
			req.OK, req.Cancel = "Cancel", "Cancel"
			ch := make(chan error, 1)
			go func() { ch <- p.Confirm(context.Background(), req) }()
			win := findWindow(t, d, req.Title)
			x(t, d, "xdotool", "windowfocus", "--sync", win)
			x(t, d, "xdotool", "key", "Return")
			if err := wait(t, ch); err != nil {
				t.Fatalf("Confirm one-button: %v", err)
			}
		})
	}
}
