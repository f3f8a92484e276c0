package prompt

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/stepup-agent/stepup-agent/api"
	"go.uber.org/zap/zaptest"
)

func stopProcess(pid int) error { return syscall.Kill(pid, syscall.SIGSTOP) }

// testSelector is a selector over the programs installed here, with
// pinentry-gtk-2 as the GUI pinentry and pinentry-tty for terminals.
func testSelector(t *testing.T, driver string) Selector {
	t.Helper()
	s, err := NewSelectorOptions(Options{Driver: driver, Log: zaptest.NewLogger(t), Pinentry: "pinentry-gtk-2", TerminalPinentry: "pinentry-tty"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewSelectorUnknownDriver(t *testing.T) {
	if _, err := NewSelector("kdialog", zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "unknown prompt driver") {
		t.Fatalf("NewSelector(kdialog) = %v", err)
	}
	for _, d := range Drivers {
		s, err := NewSelector(d, zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("NewSelector(%s): %v", d, err)
		}
		if s.Name() != d {
			t.Fatalf("Name() = %q, want %q", s.Name(), d)
		}
	}
}

func TestSelectNone(t *testing.T) {
	s, _ := NewSelector("none", zaptest.NewLogger(t))
	_, err := s.Select(api.PromptEnv{TTY: "/dev/tty"})
	if !errors.Is(err, ErrNoPrompter) {
		t.Fatalf("none: %v", err)
	}
}

// The selection rules of docs/prompts.md, with real terminals and a real
// X display.
func TestSelectRules(t *testing.T) {
	requireProgram(t, "pinentry-tty")
	requireProgram(t, "pinentry-gtk-2")
	requireProgram(t, "zenity")
	disp := testDisplay(t)
	tm := newTerm(t)
	tty := tm.name()

	// The agent's own display, as when it runs in the desktop session.
	t.Setenv("DISPLAY", disp)
	t.Setenv("WAYLAND_DISPLAY", "")

	cases := []struct {
		name, driver string
		env          api.PromptEnv
		want         string // "pinentry-gtk-2@display", "pinentry-tty@tty", "zenity@display", "" = NoPrompterError
	}{
		{"desktop app", "auto", api.PromptEnv{Display: disp}, "pinentry-gtk-2@" + disp},
		{"desktop terminal", "auto", api.PromptEnv{TTY: tty, Display: disp}, "pinentry-gtk-2@" + disp},
		{"ssh session", "auto", api.PromptEnv{TTY: tty, Term: "xterm"}, "pinentry-tty@" + tty},
		{"ssh -X session", "auto", api.PromptEnv{TTY: tty, Display: "localhost:10.0"}, "pinentry-tty@" + tty},
		{"stale display, tty", "auto", api.PromptEnv{TTY: tty, Display: ":377"}, "pinentry-tty@" + tty},
		{"IDE or service: agent's display", "auto", api.PromptEnv{}, "pinentry-gtk-2@" + disp},
		{"closed tty: agent's display", "auto", api.PromptEnv{TTY: "/dev/pts/98765"}, "pinentry-gtk-2@" + disp},
		{"terminal forced", "terminal", api.PromptEnv{TTY: tty, Display: disp}, "pinentry-tty@" + tty},
		{"terminal forced, no tty", "terminal", api.PromptEnv{Display: disp}, ""},
		{"zenity forced", "zenity", api.PromptEnv{TTY: tty, Display: disp}, "zenity@" + disp},
		{"zenity forced, ssh", "zenity", api.PromptEnv{TTY: tty}, "zenity@" + disp},
		{"pinentry forced, ssh", "pinentry", api.PromptEnv{TTY: tty}, "pinentry-tty@" + tty},
		{"osascript on linux", "osascript", api.PromptEnv{TTY: tty, Display: disp}, ""},
		{"not a device", "terminal", api.PromptEnv{TTY: "/etc/passwd"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := testSelector(t, c.driver).Select(c.env)
			if got := describePrompter(p); got != c.want {
				t.Fatalf("Select(%+v) with %s = %s (%v), want %s", c.env, c.driver, got, err, c.want)
			}
			if c.want == "" {
				var np *NoPrompterError
				if !errors.As(err, &np) || np.Hint == "" {
					t.Fatalf("want a NoPrompterError with a hint, got %v", err)
				}
				t.Logf("hint: %s", np.Hint)
			}
		})
	}

	// Without a display of its own, an IDE's request has nowhere to go.
	t.Setenv("DISPLAY", "")
	_, err := testSelector(t, "auto").Select(api.PromptEnv{})
	var np *NoPrompterError
	if !errors.As(err, &np) {
		t.Fatalf("no tty, no display: %v", err)
	}
	for _, want := range []string{"no terminal", "no display of its own", "import-environment"} {
		if !strings.Contains(np.Hint, want) {
			t.Errorf("hint %q lacks %q", np.Hint, want)
		}
	}
}

func describePrompter(p Prompter) string {
	switch p := p.(type) {
	case *pinentry:
		where := p.t.TTY
		if where == "" {
			where = p.t.Display
		}
		return flavour(p.program) + "@" + where
	case *zenity:
		return "zenity@" + p.t.Display
	case nil:
		return ""
	}
	return "?"
}

func TestSelectMissingProgramsHint(t *testing.T) {
	none := func(string) (string, error) { return "", exec.ErrNotFound }
	s, err := NewSelectorOptions(Options{Driver: "zenity", LookPath: none})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Select(api.PromptEnv{})
	var np *NoPrompterError
	if !errors.As(err, &np) || !strings.Contains(np.Hint, "install zenity") {
		t.Fatalf("zenity missing: %v", err)
	}
}

func TestCheckTTY(t *testing.T) {
	tm := newTerm(t)
	if err := checkTTY(tm.name()); err != nil {
		t.Fatalf("checkTTY(%s): %v", tm.name(), err)
	}
	for _, bad := range []string{"", "pts/1", "/dev/null", "/dev/../etc/passwd", "/dev/pts/99999", os.DevNull} {
		if err := checkTTY(bad); err == nil {
			t.Errorf("checkTTY(%q) accepted", bad)
		}
	}
}

func TestParseXDisplay(t *testing.T) {
	for in, want := range map[string]struct {
		host string
		num  int
	}{":0": {"", 0}, ":1.0": {"", 1}, "unix:2": {"unix", 2}, "localhost:10.0": {"localhost", 10}, "[::1]:3": {"[::1]", 3}} {
		h, n, err := parseXDisplay(in)
		if err != nil || h != want.host || n != want.num {
			t.Errorf("parseXDisplay(%q) = %q, %d, %v", in, h, n, err)
		}
	}
	for _, bad := range []string{"", "0", ":", ":x", ":-1"} {
		if _, _, err := parseXDisplay(bad); err == nil {
			t.Errorf("parseXDisplay(%q) accepted", bad)
		}
	}
	if err := checkXDisplay("localhost:10.0"); !errors.Is(err, errRemoteDisplay) {
		t.Errorf("forwarded display: %v", err)
	}
}
