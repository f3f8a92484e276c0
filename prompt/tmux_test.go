package prompt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The terminal prompts in a real terminal emulator (a tmux pane): what the
// user sees, as text. With -update the screens are saved into docs/img
// for the documentation.

type tmuxPane struct {
	t      *testing.T
	socket string
	tty    string
}

func newTmux(t *testing.T) *tmuxPane {
	t.Helper()
	requireProgram(t, "tmux")
	p := &tmuxPane{t: t, socket: fmt.Sprintf("stepup-prompt-test-%d-%d", os.Getpid(), time.Now().UnixNano())}
	p.run("-u", "new-session", "-d", "-x", "80", "-y", "16", "sh", "-c", "printf '$ stepupctl prompt wallet:export\\n'; exec sleep 120")
	t.Cleanup(func() { p.run("kill-server") })
	p.tty = strings.TrimSpace(p.run("display-message", "-p", "#{pane_tty}"))
	p.waitFor("$ stepupctl") // the shell's line first, then the prompt
	return p
}

func (p *tmuxPane) run(args ...string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tmux", append([]string{"-L", p.socket}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "TMUX=")
	out, err := cmd.CombinedOutput()
	if err != nil && args[0] != "kill-server" {
		p.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

func (p *tmuxPane) screen() string { return p.run("capture-pane", "-p") }

func (p *tmuxPane) waitFor(want string) string {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s := p.screen(); strings.Contains(s, want) {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("pane never showed %q:\n%s", want, p.screen())
	return ""
}

// saveScreen keeps a pane's text for the documentation (docs/prompts.md
// quotes it): a terminal prompt is best shown as the text it is.
func saveScreen(t *testing.T, text, name string) {
	t.Helper()
	if !*update {
		return
	}
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		lines = append(lines, strings.TrimRight(l, " "))
	}
	text = strings.Trim(strings.Join(lines, "\n"), "\n") + "\n"
	path := filepath.Join("..", "docs", "img", name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %s", path)
}

func TestTerminalInTmux(t *testing.T) {
	for _, prog := range terminalFlavours {
		t.Run(prog, func(t *testing.T) {
			pane := newTmux(t)
			p := testPinentry(t, prog, target{TTY: pane.tty, Term: "tmux-256color", Lang: "C.UTF-8"})
			req := sampleRequest("stepup-agent")
			req.Description = strings.Replace(req.Description, "Method: totp", "Method: totp – Bestätigung", 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch := getPINAsync(ctx, p, req)
			screen := pane.waitFor("TOTP code:")
			screen = pane.waitFor("Bestätigung")
			if !strings.Contains(screen, "wallet:export") {
				t.Fatalf("screen lacks the scope:\n%s", screen)
			}
			saveScreen(t, screen, "prompt-"+prog+".txt")
			pane.run("send-keys", "-t", "0", "271828", "Enter")
			if r := wait(t, ch); r.err != nil || r.pin != "271828" {
				t.Fatalf("GetPIN = %q, %v", r.pin, r.err)
			}
			if strings.Contains(pane.screen(), "271828") {
				t.Fatal("the code was echoed on the terminal")
			}
		})
	}
}
