package prompt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// target is where a prompt goes: a terminal (TTY with its Term and Lang)
// or a display (X11 Display and/or WaylandDisplay).
type target struct {
	TTY, Term, Lang         string
	Display, WaylandDisplay string
}

// pinentry drives one pinentry program over Assuan. It serves the
// "pinentry" driver (a GUI flavour on a display, or a terminal flavour)
// and the "terminal" driver (pinentry-tty or pinentry-curses on the
// requester's tty).
type pinentry struct {
	driver  string // Name(): "pinentry" or "terminal"
	program string // absolute path
	t       target
	log     *zap.Logger
}

func (p *pinentry) Name() string { return p.driver }

func (p *pinentry) GetPIN(ctx context.Context, req Request) (string, error) {
	pin, err := p.run(ctx, req, true)
	if err != nil {
		return "", err
	}
	s := string(pin)
	clear(pin)
	return s, nil
}

func (p *pinentry) Confirm(ctx context.Context, req Request) error {
	_, err := p.run(ctx, req, false)
	return err
}

// flavour is the pinentry's name after resolving symlinks (Debian's
// /usr/bin/pinentry is an alternative pointing at one of them).
func flavour(program string) string {
	if real, err := filepath.EvalSymlinks(program); err == nil {
		program = real
	}
	return filepath.Base(program)
}

func isTerminalFlavour(name string) bool {
	return name == "pinentry-tty" || name == "pinentry-curses"
}

// run shows one GETPIN (getPIN) or CONFIRM dialog and returns the data.
func (p *pinentry) run(ctx context.Context, req Request, getPIN bool) ([]byte, error) {
	s := render(req)
	onTTY := p.t.TTY != ""
	if onTTY {
		// Escape and Ctrl-C do not cancel pinentry-tty or -curses (1.2.1):
		// say what does.
		if flavour(p.program) == "pinentry-curses" {
			s.desc += "\nTo cancel, press Tab twice (to <Cancel>), then Enter."
		} else {
			s.desc += "\nCtrl-D cancels."
		}
	}
	if !getPIN {
		// pinentry-tty offers only the buttons it is given labels for.
		if s.ok == "" {
			s.ok = "OK"
		}
		if s.cancel == "" {
			s.cancel = "Cancel"
		}
	}
	pctx, cancel := context.WithTimeout(ctx, s.timeout+timeoutGrace)
	defer cancel()

	set := map[string]string{}
	var args []string
	if onTTY {
		set["TERM"] = p.t.Term
		set["LC_ALL"] = ""
		set["LC_CTYPE"] = p.t.Lang
	} else {
		set["DISPLAY"] = p.t.Display
		set["WAYLAND_DISPLAY"] = p.t.WaylandDisplay
		if p.t.Display != "" {
			args = append(args, "--display", p.t.Display)
		}
	}

	var saved *ttyState
	if onTTY {
		if st, err := saveTTY(p.t.TTY); err == nil {
			saved = st
			defer saved.close()
		} else {
			return nil, &NoPrompterError{Hint: fmt.Sprintf("cannot open the requester's terminal %s: %v", p.t.TTY, err)}
		}
	}

	cmd := command(pctx, p.program, args, childEnv(set))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr stderrBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.program, err)
	}
	log := p.log.With(zap.String("program", p.program), zap.Int("pid", cmd.Process.Pid))
	log.Debug("prompt program started", zap.String("tty", p.t.TTY), zap.String("display", p.t.Display), zap.String("waylandDisplay", p.t.WaylandDisplay))

	conn := newAssuanConn(stdin, stdout)
	data, dlgErr := p.dialog(conn, s, getPIN)
	if dlgErr == nil || isAnswer(dlgErr) {
		conn.transact("BYE") //nolint:errcheck // the answer is in; pinentry exits either way
	}
	stdin.Close()
	waitErr := cmd.Wait()

	ended := ctx.Err() != nil || pctx.Err() != nil
	if saved != nil && (ended || waitErr != nil) {
		// The program was signalled or died: put the terminal back as it
		// was, in case it had no chance to (SIGKILL leaves it raw).
		if err := saved.restore(); err != nil {
			log.Warn("could not restore the terminal's settings", zap.Error(err))
		}
	}
	switch {
	case ctx.Err() != nil:
		clear(data)
		log.Debug("prompt dismissed", zap.Error(ctx.Err()))
		return nil, ctx.Err()
	case pctx.Err() != nil:
		clear(data)
		return nil, ErrTimeout
	case dlgErr != nil:
		clear(data)
		var ae *AssuanError
		if errors.As(dlgErr, &ae) && ae.System() {
			return nil, &NoPrompterError{Hint: fmt.Sprintf("%s could not reach the %s: %s", filepath.Base(p.program), p.where(), ae.Message)}
		}
		if !isAnswer(dlgErr) {
			log.Warn("prompt program failed", zap.Error(dlgErr), zap.String("stderr", firstLine(stderr.String())))
			if ae == nil {
				dlgErr = fmt.Errorf("%s: %w (%s)", filepath.Base(p.program), dlgErr, firstLine(stderr.String()))
			}
		}
		return nil, dlgErr
	}
	return data, nil
}

func (p *pinentry) where() string {
	if p.t.TTY != "" {
		return "terminal " + p.t.TTY
	}
	return "display " + p.t.Display + p.t.WaylandDisplay
}

// isAnswer: the user's or the clock's answer rather than a failure.
func isAnswer(err error) bool {
	return errors.Is(err, ErrCancelled) || errors.Is(err, ErrTimeout)
}

// dialog runs the Assuan conversation: greeting, options, texts, then
// GETPIN or CONFIRM.
func (p *pinentry) dialog(c *assuanConn, s shown, getPIN bool) ([]byte, error) {
	if err := c.greeting(); err != nil {
		return nil, err
	}
	var cmds []string
	option := func(name, value string) {
		if value == "" {
			return
		}
		if !safeValue(value) {
			p.log.Warn("not passing an odd value to pinentry", zap.String("option", name))
			return
		}
		cmds = append(cmds, "OPTION "+name+"="+value)
	}
	option("ttyname", p.t.TTY)
	option("ttytype", p.t.Term)
	option("lc-ctype", p.t.Lang)
	option("display", p.t.Display)
	cmds = append(cmds,
		"SETTIMEOUT "+strconv.Itoa(timeoutSeconds(s.timeout)),
		assuanCommand("SETTITLE", s.title),
		assuanCommand("SETDESC", s.desc),
	)
	if getPIN && s.prompt != "" {
		cmds = append(cmds, assuanCommand("SETPROMPT", s.prompt))
	}
	if s.errText != "" {
		cmds = append(cmds, assuanCommand("SETERROR", s.errText))
	}
	if s.ok != "" {
		cmds = append(cmds, assuanCommand("SETOK", s.ok))
	}
	if s.cancel != "" && s.cancel != s.ok {
		cmds = append(cmds, assuanCommand("SETCANCEL", s.cancel))
	}
	for _, cmd := range cmds {
		if _, err := c.transact(cmd); err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Fields(cmd)[0], err)
		}
	}
	if !getPIN {
		confirm := "CONFIRM"
		if s.ok != "" && s.ok == s.cancel {
			// One button, as the agent asks while it waits elsewhere
			// (a passkey in the browser): its only answer is "stop".
			confirm = "CONFIRM --one-button"
		}
		_, err := c.transact(confirm)
		return nil, err
	}
	return c.transact("GETPIN")
}
