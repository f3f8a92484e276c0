package prompt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// zenity shows GTK dialogs on Linux desktops (X11 or Wayland).
//
// Every text goes in as one argv element in --name=value form, so no text
// can be read as an option, and nothing passes through a shell. The
// secret comes back on stdout. Exit codes: 0 OK, 1 Cancel or the window
// closed, 5 --timeout ran out (zenity 3.44; its --password dialog exits 1 on
// timeout, so we use --entry --hide-text, which also shows our text).
type zenity struct {
	program string
	t       target
	log     *zap.Logger
}

const (
	zenityCancel  = 1
	zenityTimeout = 5
)

func (z *zenity) Name() string { return "zenity" }

// zenityEntryText escapes text for --entry's --text, which zenity passes
// through g_strcompress (backslash escapes) and shows as a label with
// mnemonics (an underscore marks the next letter).
func zenityEntryText(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return strings.ReplaceAll(s, "_", "__")
}

func (z *zenity) GetPIN(ctx context.Context, req Request) (string, error) {
	s := render(req)
	text := s.desc
	if s.errText != "" {
		text = s.errText + "\n\n" + text
	}
	if s.prompt != "" {
		text += "\n\n" + s.prompt
	}
	args := []string{"--entry", "--hide-text", "--text=" + zenityEntryText(text)}
	out, err := z.run(ctx, s, args)
	if err != nil {
		return "", err
	}
	pin := strings.TrimSuffix(string(out), "\n")
	clear(out)
	return pin, nil
}

func (z *zenity) Confirm(ctx context.Context, req Request) error {
	s := render(req)
	text := s.desc
	if s.errText != "" {
		text = s.errText + "\n\n" + text
	}
	args := []string{"--question", "--no-markup", "--text=" + text}
	if s.ok != "" && s.ok == s.cancel {
		// One button that stops the wait (see pinentry's --one-button).
		args = append(args, "--switch", "--extra-button="+s.ok)
	}
	_, err := z.run(ctx, s, args)
	var ee *exec.ExitError
	if s.ok != "" && s.ok == s.cancel && errors.As(err, &ee) {
		return nil // --switch: the extra button exits 1 with its label printed
	}
	return err
}

// run starts zenity with the common options and maps its exit status.
func (z *zenity) run(ctx context.Context, s shown, args []string) ([]byte, error) {
	pctx, cancel := context.WithTimeout(ctx, s.timeout+timeoutGrace)
	defer cancel()
	all := []string{"--title=" + s.title, "--timeout=" + strconv.Itoa(timeoutSeconds(s.timeout))}
	if s.ok != "" {
		all = append(all, "--ok-label="+s.ok)
	}
	if s.cancel != "" {
		all = append(all, "--cancel-label="+s.cancel)
	}
	all = append(all, args...)
	cmd := command(pctx, z.program, all, childEnv(map[string]string{
		"DISPLAY":         z.t.Display,
		"WAYLAND_DISPLAY": z.t.WaylandDisplay,
		"NO_AT_BRIDGE":    "1", // no accessibility bus: it only delays the dialog
	}))
	var stdout bytes.Buffer
	var stderr stderrBuf
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	out := stdout.Bytes()
	switch {
	case ctx.Err() != nil:
		clear(out)
		return nil, ctx.Err()
	case pctx.Err() != nil:
		clear(out)
		return nil, ErrTimeout
	case err == nil:
		return out, nil
	}
	clear(out)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return nil, fmt.Errorf("zenity: %w", err)
	}
	msg := stderr.String()
	if strings.Contains(msg, "cannot open display") {
		return nil, &NoPrompterError{Hint: "zenity could not open the display " + z.t.Display + z.t.WaylandDisplay}
	}
	switch ee.ExitCode() {
	case zenityCancel:
		if s.ok != "" && s.ok == s.cancel {
			return nil, err // Confirm's one-button mode decides
		}
		return nil, ErrCancelled
	case zenityTimeout:
		return nil, ErrTimeout
	}
	z.log.Warn("zenity failed", zap.Int("exit", ee.ExitCode()), zap.String("stderr", firstLine(msg)))
	return nil, fmt.Errorf("zenity exited %d: %s", ee.ExitCode(), firstLine(msg))
}
