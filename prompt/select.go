package prompt

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/stepup-agent/stepup-agent/api"
	"go.uber.org/zap"
)

// Drivers are the values --prompter and the policy's prompt.driver take.
var Drivers = []string{"auto", "pinentry", "zenity", "osascript", "terminal", "none"}

// Options configure a Selector. NewSelector fills them from its arguments
// and the environment.
type Options struct {
	// Driver is one of Drivers; empty means auto.
	Driver string
	Log    *zap.Logger
	// Pinentry is the pinentry program to use for GUI prompts, as
	// gpg-agent's pinentry-program (env STEPUP_PINENTRY). Empty: the first
	// of pinentry-gnome3, -qt, -gtk-2, -fltk, -x11, pinentry found in PATH
	// (pinentry-mac on macOS). A terminal flavour here is used for
	// terminal prompts instead.
	Pinentry string
	// TerminalPinentry is the pinentry for prompts on the requester's
	// terminal (env STEPUP_PINENTRY_TTY). Empty: pinentry-tty, else
	// pinentry-curses.
	TerminalPinentry string
	// LookPath finds programs; nil means exec.LookPath.
	LookPath func(string) (string, error)
}

// NewSelector returns the Selector for driver (the --prompter flag or the
// policy's prompt.driver). Each driver's program is looked up now; a
// driver whose program is missing is not used by auto, and when forced it
// answers every request with a NoPrompterError that says what to install.
// An unknown driver name is an error.
func NewSelector(driver string, log *zap.Logger) (Selector, error) {
	return NewSelectorOptions(Options{
		Driver:           driver,
		Log:              log,
		Pinentry:         os.Getenv("STEPUP_PINENTRY"),
		TerminalPinentry: os.Getenv("STEPUP_PINENTRY_TTY"),
	})
}

// NewSelectorOptions is NewSelector with every option spelled out.
func NewSelectorOptions(o Options) (Selector, error) {
	if o.Driver == "" {
		o.Driver = "auto"
	}
	known := false
	for _, d := range Drivers {
		known = known || d == o.Driver
	}
	if !known {
		return nil, fmt.Errorf("unknown prompt driver %q (want one of %s)", o.Driver, strings.Join(Drivers, ", "))
	}
	if o.Driver == "none" {
		return None{}, nil
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.LookPath == nil {
		o.LookPath = exec.LookPath
	}
	s := &selector{driver: o.Driver, log: o.Log}
	seen := map[string]bool{}
	addGUI := func(name string) {
		path, err := o.LookPath(name)
		if err != nil {
			return
		}
		if real, err := filepath.EvalSymlinks(path); err == nil && seen[real] {
			return
		} else if err == nil {
			seen[real] = true
		}
		if isTerminalFlavour(flavour(path)) {
			if s.ttyPinentry == "" {
				s.ttyPinentry = path
			}
			return
		}
		if flavour(path) == "pinentry-gnome3" && os.Getenv("DBUS_SESSION_BUS_ADDRESS") == "" {
			return // without a session bus it falls back to curses on our stdin
		}
		s.guiPinentries = append(s.guiPinentries, path)
	}
	if o.TerminalPinentry != "" {
		if path, err := o.LookPath(o.TerminalPinentry); err == nil {
			s.ttyPinentry = path
		} else {
			o.Log.Warn("terminal pinentry not found", zap.String("program", o.TerminalPinentry), zap.Error(err))
		}
	}
	if o.Pinentry != "" {
		if _, err := o.LookPath(o.Pinentry); err != nil {
			o.Log.Warn("pinentry not found", zap.String("program", o.Pinentry), zap.Error(err))
		}
		addGUI(o.Pinentry)
	}
	if runtime.GOOS == "darwin" {
		addGUI("pinentry-mac")
		if path, err := o.LookPath("osascript"); err == nil {
			s.osascript = path
		}
	} else {
		for _, name := range []string{"pinentry-gnome3", "pinentry-qt", "pinentry-gtk-2", "pinentry-gtk2", "pinentry-fltk", "pinentry-x11", "pinentry"} {
			addGUI(name)
		}
		if path, err := o.LookPath("zenity"); err == nil {
			s.zenity = path
		}
	}
	if s.ttyPinentry == "" {
		for _, name := range []string{"pinentry-tty", "pinentry-curses"} {
			if path, err := o.LookPath(name); err == nil {
				s.ttyPinentry = path
				break
			}
		}
	}
	o.Log.Info("prompt drivers",
		zap.String("driver", s.driver),
		zap.Strings("guiPinentry", s.guiPinentries),
		zap.String("terminalPinentry", s.ttyPinentry),
		zap.String("zenity", s.zenity),
		zap.String("osascript", s.osascript))
	return s, nil
}

type selector struct {
	driver        string
	log           *zap.Logger
	guiPinentries []string // in order of preference
	ttyPinentry   string
	zenity        string
	osascript     string
}

func (s *selector) Name() string { return s.driver }

var errNoDisplay = errors.New("the request carried no display")

// Select picks the prompt for a request, in this order (docs/prompts.md):
//
//  1. the requester's graphical session: a local X11 DISPLAY or a
//     WAYLAND_DISPLAY that answers. A forwarded display (ssh -X's
//     localhost:10.0) does not count: that request comes from an SSH
//     session.
//  2. the requester's terminal: the tty it named, if it is a terminal
//     owned by the agent's user.
//  3. the agent's own graphical session (its DISPLAY/WAYLAND_DISPLAY, or
//     macOS's Aqua session), for requests from programs with neither, such
//     as IDE plugins and services.
//
// A forced driver takes the same steps with its own programs only; the
// terminal driver takes step 2 only.
func (s *selector) Select(env api.PromptEnv) (Prompter, error) {
	var why []string
	gui := s.driver != "terminal"
	term := s.driver == "auto" || s.driver == "pinentry" || s.driver == "terminal"

	if gui && !platformHasAqua {
		t, err := displayTarget(env.Display, env.WaylandDisplay)
		switch {
		case err == nil:
			if p := s.guiFor(t); p != nil {
				return p, nil
			}
			why = append(why, fmt.Sprintf("no %s program can show a prompt on the requester's display", s.guiWhat()))
		case errors.Is(err, errNoDisplay):
		default:
			why = append(why, err.Error())
		}
	}
	if term {
		switch {
		case env.TTY == "":
			why = append(why, "the request carried no terminal")
		case s.ttyPinentry == "":
			why = append(why, "neither pinentry-tty nor pinentry-curses is installed for prompts on the requester's terminal")
		default:
			if err := checkTTY(env.TTY); err != nil {
				why = append(why, err.Error())
			} else {
				return s.terminalFor(env), nil
			}
		}
	}
	if gui {
		if platformHasAqua {
			if p := s.guiFor(target{}); p != nil {
				return p, nil
			}
			why = append(why, fmt.Sprintf("no %s program is installed", s.guiWhat()))
		} else {
			t, err := displayTarget(os.Getenv("DISPLAY"), os.Getenv("WAYLAND_DISPLAY"))
			switch {
			case err == nil:
				if p := s.guiFor(t); p != nil {
					return p, nil
				}
				why = append(why, fmt.Sprintf("no %s program is installed for the agent's display", s.guiWhat()))
			case errors.Is(err, errNoDisplay):
				why = append(why, "the agent has no display of its own")
			default:
				why = append(why, "the agent's own "+err.Error())
			}
		}
	}
	return nil, &NoPrompterError{Hint: s.hint(why)}
}

// displayTarget is the GUI target for DISPLAY/WAYLAND_DISPLAY values, if
// either answers.
func displayTarget(x, wl string) (target, error) {
	if x == "" && wl == "" {
		return target{}, errNoDisplay
	}
	var t target
	var errs []string
	if wl != "" {
		if err := checkWayland(wl); err != nil {
			errs = append(errs, err.Error())
		} else {
			t.WaylandDisplay = wl
		}
	}
	if x != "" {
		if err := checkXDisplay(x); err != nil {
			errs = append(errs, err.Error())
		} else {
			t.Display = x
		}
	}
	if t.Display == "" && t.WaylandDisplay == "" {
		return t, errors.New(strings.Join(errs, "; "))
	}
	return t, nil
}

// xOnly: pinentry flavours that speak X11 only (no Wayland client).
func xOnly(program string) bool {
	f := flavour(program)
	for _, w := range []string{"qt", "gnome3", "mac"} {
		if strings.Contains(f, w) {
			return false
		}
	}
	return true
}

func (s *selector) guiFor(t target) Prompter {
	if s.driver == "auto" || s.driver == "pinentry" {
		for _, prog := range s.guiPinentries {
			if !platformHasAqua && t.Display == "" && xOnly(prog) {
				continue
			}
			return &pinentry{driver: "pinentry", program: prog, t: t, log: s.log}
		}
	}
	if (s.driver == "auto" || s.driver == "zenity") && s.zenity != "" && !platformHasAqua {
		return &zenity{program: s.zenity, t: t, log: s.log}
	}
	if s.driver == "auto" || s.driver == "osascript" {
		if p := s.osascriptFor(); p != nil {
			return p
		}
	}
	return nil
}

func (s *selector) terminalFor(env api.PromptEnv) Prompter {
	t := target{TTY: env.TTY, Term: env.Term, Lang: env.Lang}
	if !safeValue(t.Term) {
		t.Term = ""
	}
	if t.Term == "" && flavour(s.ttyPinentry) == "pinentry-curses" {
		t.Term = "vt100" // curses needs some type; vt100 is the safest guess
	}
	if !safeValue(t.Lang) {
		t.Lang = "C.UTF-8" // so curses shows non-ASCII text
	}
	name := "terminal"
	if s.driver == "pinentry" {
		name = "pinentry"
	}
	return &pinentry{driver: name, program: s.ttyPinentry, t: t, log: s.log}
}

func (s *selector) guiWhat() string {
	switch s.driver {
	case "pinentry":
		return "GUI pinentry"
	case "zenity":
		return "zenity"
	case "osascript":
		return "osascript"
	}
	return "GUI prompt (pinentry-gnome3/-qt/-gtk-2, zenity, osascript)"
}

func (s *selector) hint(why []string) string {
	var b strings.Builder
	b.WriteString("no prompt can reach you from here: ")
	b.WriteString(strings.Join(why, "; "))
	b.WriteString(". ")
	switch s.driver {
	case "terminal":
		b.WriteString("The prompt driver is \"terminal\" (--prompter or the policy's prompt.driver): run the client on a terminal (stepupctl sends its tty) or choose another driver")
	case "osascript":
		if runtime.GOOS != "darwin" {
			b.WriteString("The prompt driver is \"osascript\" (--prompter or the policy's prompt.driver), which exists on macOS only: choose another driver")
			break
		}
		fallthrough
	case "zenity", "pinentry":
		fmt.Fprintf(&b, "The prompt driver is %q (--prompter or the policy's prompt.driver): ", s.driver)
		if s.driver == "zenity" && s.zenity == "" || s.driver == "osascript" && s.osascript == "" || s.driver == "pinentry" && len(s.guiPinentries) == 0 && s.ttyPinentry == "" {
			fmt.Fprintf(&b, "install %s, or choose another driver", map[string]string{"zenity": "zenity", "osascript": "osascript", "pinentry": "a pinentry (pinentry-gnome3, pinentry-gtk2, pinentry-tty)"}[s.driver])
		} else {
			b.WriteString("run the client in your desktop session, or give the agent a display (systemctl --user import-environment DISPLAY WAYLAND_DISPLAY, then restart it)")
		}
	default:
		b.WriteString("Run the client on a terminal (stepupctl sends its tty) or in your desktop session, give the agent a display (systemctl --user import-environment DISPLAY WAYLAND_DISPLAY, then restart it), or collect the answer yourself with startVerification/completeVerification")
	}
	b.WriteString("; see docs/prompts.md")
	return b.String()
}
