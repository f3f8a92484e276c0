package password

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/method/password/pamproto"
	"go.uber.org/zap"
)

// errTimeout is the cause of a check that outlived cfg.Timeout.
var errTimeout = errors.New("PAM did not answer in time")

// maxStderr bounds what is kept of the helper's stderr for the log.
const maxStderr = 4096

// check runs the helper once for password and maps its answer.
func (m *Method) check(ctx context.Context, helper, password string) error {
	tctx, cancel := context.WithTimeoutCause(ctx, m.cfg.Timeout, errTimeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, helper, "--service", m.cfg.Service)
	// Nothing of the agent's environment: PAM modules get PATH only.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = sysProcAttr(m.cred)
	// Kill the helper's whole process group (unix_chkpwd, anything a
	// module started), not just the helper.
	cmd.Cancel = func() error { return killGroup(cmd.Process) }
	cmd.WaitDelay = time.Second
	stderr := &capped{max: maxStderr}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return m.failed("cannot start %s: %v", helper, err)
	}
	// Read by Wait, which gives up WaitDelay after the helper's exit
	// even if something it started still holds the pipe.
	stdout := &capped{max: pamproto.MaxLine + 1}
	cmd.Stdout = stdout
	start := time.Now() // how long the helper took, for the log: not the agent's clock
	if err := cmd.Start(); err != nil {
		return m.failed("cannot start %s: %v", helper, err)
	}
	if m.started != nil {
		m.started(cmd.Process.Pid)
	}
	// stdin stays open until the helper has exited: its end of file is
	// the helper's signal that the agent hung up. Wait closes it.
	werr := pamproto.WriteRequest(stdin, password)
	err = cmd.Wait()
	kind, msg, rerr := pamproto.ReadResult(strings.NewReader(stdout.String()))
	took := time.Since(start)
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" {
			m.log.Debug("helper says", zap.String("line", line))
		}
	}
	// The caller gave up (hang-up, cancel, its own deadline): the helper
	// was killed and there is no answer.
	if ctx.Err() != nil {
		m.log.Info("password check abandoned; helper stopped", zap.Duration("after", took), zap.Error(ctx.Err()))
		return ctx.Err()
	}
	if errors.Is(context.Cause(tctx), errTimeout) {
		m.log.Warn("PAM did not answer; helper stopped", zap.Duration("timeout", m.cfg.Timeout), zap.String("service", m.cfg.Service))
		return api.Errorf(api.CodeInternal, "PAM did not answer within %v; the check was stopped", m.cfg.Timeout).
			WithHint("a module in /etc/pam.d/%s hangs (a network directory, a device); see the agent's log", m.cfg.Service)
	}
	// A helper that answered nothing and refused the request: say so;
	// one that answered, however badly, is judged by its answer.
	if werr != nil && rerr != nil && stdout.String() == "" {
		return m.failed("%s did not take the request (%v; %v)", helper, werr, exitText(err))
	}
	if rerr != nil {
		return m.failed("%s failed: %v (%s)", helper, rerr, exitText(err))
	}
	switch kind {
	case pamproto.OK:
		if err != nil {
			// An answer "ok" with a failed exit is no answer.
			return m.failed("%s said ok but %s", helper, exitText(err))
		}
		m.log.Info("password accepted", zap.String("user", m.user))
		return nil
	case pamproto.Wrong:
		m.log.Info("password refused", zap.String("user", m.user), zap.Duration("took", took))
		return method.ErrVerificationFailed
	case pamproto.AccountExpired:
		m.log.Info("account expired", zap.String("user", m.user))
		return fmt.Errorf("%w: the account has expired", method.ErrVerificationFailed)
	case pamproto.PasswordExpired:
		m.log.Info("password expired", zap.String("user", m.user))
		return fmt.Errorf("%w: the password has expired; change it with passwd", method.ErrVerificationFailed)
	}
	m.log.Warn("PAM failed", zap.String("service", m.cfg.Service), zap.String("error", msg))
	return api.Errorf(api.CodeInternal, "PAM could not check the password: %s", msg).
		WithHint("see the agent's log and /etc/pam.d/%s", m.cfg.Service)
}

// failed is the error of a helper that broke (crashed, killed, not
// runnable): the agent stays up and says so.
func (m *Method) failed(format string, args ...any) error {
	e := api.Errorf(api.CodeInternal, "the password check failed: "+format, args...).
		WithHint("see the agent's log (stepup-agent --debug shows what PAM said); reinstall %s if it crashes", HelperName)
	m.log.Warn("PAM helper failed", zap.String("error", e.Message))
	return e
}

// exitText describes how the helper ended.
func exitText(err error) string {
	if err == nil {
		return "it exited normally"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return "it ended with " + ee.ProcessState.String()
	}
	return err.Error()
}

// capped keeps the first max bytes written to it.
type capped struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
		} else {
			c.buf.Write(p)
		}
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
