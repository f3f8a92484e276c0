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

// osascript shows a dialog with AppleScript's "display dialog". The script
// is a constant: every text reaches it as an argument of its run handler
// (on run argv), never as part of the script's source. Each argument
// carries a leading "=" so none can be taken for an osascript option, and
// the script strips it.
type osascript struct {
	program string
	log     *zap.Logger
}

const osascriptSource = `on arg(argv, i)
	set s to item i of argv
	if length of s is 1 then return ""
	return text 2 thru -1 of s
end arg
on run argv
	set theTitle to arg(argv, 1)
	set theText to arg(argv, 2)
	set okLabel to arg(argv, 3)
	set cancelLabel to arg(argv, 4)
	set secs to (arg(argv, 5)) as integer
	set wantAnswer to arg(argv, 6) is "answer"
	if okLabel is cancelLabel then
		set r to display dialog theText with title theTitle buttons {cancelLabel} default button 1 cancel button 1 giving up after secs with icon caution
	else if wantAnswer then
		set r to display dialog theText with title theTitle default answer "" with hidden answer buttons {cancelLabel, okLabel} default button 2 cancel button 1 giving up after secs with icon caution
	else
		set r to display dialog theText with title theTitle buttons {cancelLabel, okLabel} default button 2 cancel button 1 giving up after secs with icon caution
	end if
	if gave up of r then return "timeout"
	if wantAnswer then return "ok:" & text returned of r
	return "ok:"
end run`

func (o *osascript) Name() string { return "osascript" }

func (o *osascript) GetPIN(ctx context.Context, req Request) (string, error) {
	out, err := o.run(ctx, req, true)
	if err != nil {
		return "", err
	}
	pin := string(out)
	clear(out)
	return pin, nil
}

func (o *osascript) Confirm(ctx context.Context, req Request) error {
	_, err := o.run(ctx, req, false)
	return err
}

func (o *osascript) run(ctx context.Context, req Request, answer bool) ([]byte, error) {
	s := render(req)
	text := s.desc
	if s.errText != "" {
		text = s.errText + "\n\n" + text
	}
	if answer && s.prompt != "" {
		text += "\n\n" + s.prompt
	}
	ok, cancelLabel := s.ok, s.cancel
	if ok == "" {
		ok = "OK"
	}
	if cancelLabel == "" {
		cancelLabel = "Cancel"
	}
	mode := "confirm"
	if answer {
		mode = "answer"
	}
	pctx, cancel := context.WithTimeout(ctx, s.timeout+timeoutGrace)
	defer cancel()
	args := []string{"-e", osascriptSource}
	for _, a := range []string{s.title, text, ok, cancelLabel, strconv.Itoa(timeoutSeconds(s.timeout)), mode} {
		args = append(args, "="+a)
	}
	cmd := command(pctx, o.program, args, childEnv(nil))
	var stdout bytes.Buffer
	var stderr stderrBuf
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	out := bytes.TrimSuffix(stdout.Bytes(), []byte("\n"))
	switch {
	case ctx.Err() != nil:
		clear(out)
		return nil, ctx.Err()
	case pctx.Err() != nil:
		clear(out)
		return nil, ErrTimeout
	case err == nil && bytes.Equal(out, []byte("timeout")):
		return nil, ErrTimeout
	case err == nil && bytes.HasPrefix(out, []byte("ok:")):
		return out[3:], nil
	}
	clear(out)
	msg := stderr.String()
	var ee *exec.ExitError
	if errors.As(err, &ee) && strings.Contains(msg, "(-128)") { // userCanceledErr
		return nil, ErrCancelled
	}
	if strings.Contains(msg, "(-1713)") || strings.Contains(msg, "(-1712)") { // no user interaction allowed, no GUI session
		return nil, &NoPrompterError{Hint: "osascript cannot show a dialog: the agent does not run in your login (Aqua) session; run it from launchd as a LaunchAgent"}
	}
	o.log.Warn("osascript failed", zap.Error(err), zap.String("stderr", firstLine(msg)))
	return nil, fmt.Errorf("osascript: %v: %s", err, firstLine(msg))
}

// platformGUI is the macOS GUI: pinentry-mac when installed, else
// osascript, in the user's Aqua session.
const platformHasAqua = true

func (s *selector) osascriptFor() Prompter {
	if s.osascript == "" {
		return nil
	}
	return &osascript{program: s.osascript, log: s.log}
}
