package prompt

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
)

// These tests drive the real pinentry-tty and pinentry-curses on a
// pseudo-terminal: the test reads the screen and types as a user would.

var terminalFlavours = []string{"pinentry-tty", "pinentry-curses"}

func ttyTarget(tm *term) target {
	return target{TTY: tm.name(), Term: "xterm", Lang: "C.UTF-8"}
}

type pinResult struct {
	pin string
	err error
}

func getPINAsync(ctx context.Context, p Prompter, req Request) chan pinResult {
	ch := make(chan pinResult, 1)
	go func() {
		pin, err := p.GetPIN(ctx, req)
		ch <- pinResult{pin, err}
	}()
	return ch
}

func wait[T any](t *testing.T, ch chan T) T {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("the prompt did not return")
	}
	panic("unreachable")
}

func TestTerminalGetPIN(t *testing.T) {
	for _, prog := range terminalFlavours {
		t.Run(prog, func(t *testing.T) {
			tm := newTerm(t)
			p := testPinentry(t, prog, ttyTarget(tm))
			req := Request{
				Title: "stepup-agent",
				// Non-ASCII text: curses shows it only with the right
				// lc-ctype.
				Description: "stepupctl (pid 42) bittet um Überprüfung für wallet:export",
				Prompt:      "TOTP code:",
				Timeout:     20 * time.Second,
			}
			ch := getPINAsync(context.Background(), p, req)
			tm.waitFor("Überprüfung", 10*time.Second)
			tm.waitFor("TOTP code:", 10*time.Second)
			tm.typeText("123456\r")
			r := wait(t, ch)
			if r.err != nil {
				t.Fatalf("GetPIN: %v\nscreen: %q", r.err, tm.output())
			}
			if r.pin != "123456" {
				t.Fatalf("GetPIN = %q, want 123456", r.pin)
			}
			if !tm.cooked() {
				t.Fatal("terminal left in raw mode")
			}
		})
	}
}

func TestTerminalRetryShowsError(t *testing.T) {
	tm := newTerm(t)
	p := testPinentry(t, "pinentry-tty", ttyTarget(tm))
	ch := getPINAsync(context.Background(), p, Request{Description: "again", Prompt: "Code:", Error: "Wrong code, 4 tries left", Timeout: 20 * time.Second})
	tm.waitFor("Wrong code, 4 tries left", 10*time.Second)
	tm.typeText("654321\r")
	if r := wait(t, ch); r.err != nil || r.pin != "654321" {
		t.Fatalf("GetPIN = %q, %v", r.pin, r.err)
	}
}

func TestTerminalCancel(t *testing.T) {
	for _, prog := range terminalFlavours {
		t.Run(prog, func(t *testing.T) {
			tm := newTerm(t)
			p := testPinentry(t, prog, ttyTarget(tm))
			ch := getPINAsync(context.Background(), p, Request{Description: "cancel me", Prompt: "Code:", Timeout: 20 * time.Second})
			tm.waitFor("Code:", 10*time.Second)
			// Escape and Ctrl-C do not cancel these (pinentry 1.2.1):
			// Ctrl-D does in pinentry-tty, the <Cancel> button in curses.
			if prog == "pinentry-curses" {
				tm.waitFor("Tab twice", 5*time.Second)
				tm.typeText("\t")
				time.Sleep(200 * time.Millisecond)
				tm.typeText("\t")
				time.Sleep(200 * time.Millisecond)
				tm.typeText("\r")
			} else {
				tm.typeText("\x04")
			}
			r := wait(t, ch)
			if !errors.Is(r.err, ErrCancelled) {
				t.Fatalf("GetPIN after Ctrl-D: %q, %v; want ErrCancelled", r.pin, r.err)
			}
			if !tm.cooked() {
				t.Fatal("terminal left in raw mode")
			}
		})
	}
}

func TestTerminalTimeout(t *testing.T) {
	for _, prog := range terminalFlavours {
		t.Run(prog, func(t *testing.T) {
			tm := newTerm(t)
			p := testPinentry(t, prog, ttyTarget(tm))
			start := time.Now()
			_, err := p.GetPIN(context.Background(), Request{Description: "nobody answers", Timeout: 2 * time.Second})
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("GetPIN = %v, want ErrTimeout", err)
			}
			// pinentry's own SETTIMEOUT answered, not our backstop.
			if d := time.Since(start); d > 2*time.Second+timeoutGrace-time.Second {
				t.Fatalf("timed out after %v", d)
			}
			tm.waitFor("closes in 2 s", time.Second)
		})
	}
}

func TestTerminalConfirm(t *testing.T) {
	tm := newTerm(t)
	p := testPinentry(t, "pinentry-tty", ttyTarget(tm))
	ch := make(chan error, 1)
	go func() {
		ch <- p.Confirm(context.Background(), Request{Description: "Allow it?", Timeout: 20 * time.Second})
	}()
	tm.waitFor("Allow it?", 10*time.Second)
	tm.waitFor("]? ", 10*time.Second)
	tm.typeText("o\r")
	if err := wait(t, ch); err != nil {
		t.Fatalf("Confirm after o: %v", err)
	}
	go func() {
		ch <- p.Confirm(context.Background(), Request{Description: "Allow it again?", Timeout: 20 * time.Second})
	}()
	tm.waitFor("Allow it again?", 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	tm.typeText("c\r")
	if err := wait(t, ch); !errors.Is(err, ErrCancelled) {
		t.Fatalf("Confirm after c: %v, want ErrCancelled", err)
	}
}

// A client that hangs up mid-prompt: the prompt closes, the pinentry
// process is gone, and the terminal is usable again.
func TestTerminalContextCancel(t *testing.T) {
	for _, prog := range terminalFlavours {
		t.Run(prog, func(t *testing.T) {
			tm := newTerm(t)
			p := testPinentry(t, prog, ttyTarget(tm))
			ctx, cancel := context.WithCancel(context.Background())
			ch := getPINAsync(ctx, p, Request{Description: "hang up", Prompt: "Code:", Timeout: 30 * time.Second})
			pid := waitChild(t, prog)
			tm.waitFor("Code:", 10*time.Second)
			if tm.cooked() {
				t.Fatal("the terminal should be in raw mode while the prompt is up")
			}
			cancel()
			r := wait(t, ch)
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("GetPIN after cancel = %v, want context.Canceled", r.err)
			}
			if alive(pid) {
				t.Fatalf("%s (pid %d) still running", prog, pid)
			}
			if !tm.cooked() {
				t.Fatal("terminal left in raw mode")
			}
		})
	}
}

// A pinentry that ignores SIGTERM gets SIGKILL, and the agent puts the
// terminal's settings back itself.
func TestTerminalKillRestoresTTY(t *testing.T) {
	tm := newTerm(t)
	old := killGrace
	killGrace = 500 * time.Millisecond
	t.Cleanup(func() { killGrace = old })
	p := testPinentry(t, "pinentry-curses", ttyTarget(tm))
	ctx, cancel := context.WithCancel(context.Background())
	ch := getPINAsync(ctx, p, Request{Description: "stuck", Prompt: "Code:", Timeout: 30 * time.Second})
	pid := waitChild(t, "pinentry-curses")
	tm.waitFor("Code:", 10*time.Second)
	// Stop the program: a stopped process does not act on SIGTERM.
	if err := stopProcess(pid); err != nil {
		t.Fatal(err)
	}
	cancel()
	if r := wait(t, ch); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("GetPIN = %v", r.err)
	}
	if alive(pid) {
		t.Fatal("pinentry-curses still running after SIGKILL")
	}
	if !tm.cooked() {
		t.Fatal("terminal left in raw mode after SIGKILL")
	}
}

func TestTerminalMissingTTYIsNoPrompter(t *testing.T) {
	s := testSelector(t, "terminal")
	_, err := s.Select(api.PromptEnv{TTY: "/dev/pts/987654"})
	var np *NoPrompterError
	if !errors.As(err, &np) || !errors.Is(err, ErrNoPrompter) {
		t.Fatalf("Select with a closed tty = %v, want NoPrompterError", err)
	}
	t.Log(np.Hint)
}

// The agent's wait-elsewhere prompt (a passkey in the browser) has one
// button, labelled as both OK and Cancel: pressing it returns nil, which
// the agent reads as "stop waiting".
func TestTerminalConfirmOneButton(t *testing.T) {
	tm := newTerm(t)
	p := testPinentry(t, "pinentry-tty", ttyTarget(tm))
	ch := make(chan error, 1)
	go func() {
		ch <- p.Confirm(context.Background(), Request{Description: "Waiting for the browser", OK: "Cancel", Cancel: "Cancel", Timeout: 20 * time.Second})
	}()
	tm.waitFor("Waiting for the browser", 10*time.Second)
	tm.waitFor("Press any key", 10*time.Second)
	if strings.Contains(tm.output(), "OK") {
		t.Fatalf("a second button is shown: %q", tm.output())
	}
	tm.typeText("x")
	if err := wait(t, ch); err != nil {
		t.Fatalf("Confirm one-button: %v", err)
	}
}
