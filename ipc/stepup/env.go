package stepup

import (
	"os"

	"github.com/stepup-agent/stepup-agent/api"
	"golang.org/x/term"
)

// CallerEnv describes where this process sits, for prompts: its terminal
// (STEPUP_TTY or GPG_TTY if set, else the terminal on stdin, stdout or
// stderr), TERM, DISPLAY, WAYLAND_DISPLAY and locale.
func CallerEnv() api.PromptEnv {
	env := api.PromptEnv{
		TTY:            os.Getenv("STEPUP_TTY"),
		Term:           os.Getenv("TERM"),
		Display:        os.Getenv("DISPLAY"),
		WaylandDisplay: os.Getenv("WAYLAND_DISPLAY"),
	}
	for _, v := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if l := os.Getenv(v); l != "" {
			env.Lang = l
			break
		}
	}
	if env.TTY == "" {
		env.TTY = os.Getenv("GPG_TTY")
	}
	if env.TTY == "" {
		for _, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
			if term.IsTerminal(int(f.Fd())) {
				if name := ttyName(f); name != "" {
					env.TTY = name
					break
				}
			}
		}
	}
	return env
}
