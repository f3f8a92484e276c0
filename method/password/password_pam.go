//go:build cgo

package password

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"sync"
	"time"

	"github.com/msteinert/pam/v2"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
)

// Available is true: this build checks passwords through PAM.
const Available = true

// Unavailable is empty when Available.
const Unavailable = ""

// Method is the password method. Create it with New.
type Method struct {
	cfg  Config
	log  *zap.Logger
	sem  chan struct{} // one PAM transaction at a time
	user string
	err  error // why the user is unknown

	// The service file's presence, checked at most every serviceRecheck:
	// isStepUpRequired asks for it on every call, and a stat per request
	// showed in the benchmarks.
	svcMu      sync.Mutex
	svcOK      bool
	svcChecked time.Time
}

const serviceRecheck = 5 * time.Second

var (
	_ method.Method       = (*Method)(nil)
	_ method.NoCredential = (*Method)(nil)
)

// New returns the password method for the user the agent runs as (or
// cfg.User).
func New(d method.Deps, cfg Config) method.Method { return newPAM(d, cfg) }

func newPAM(d method.Deps, cfg Config) *Method {
	if cfg.Service == "" {
		cfg.Service = DefaultService
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	log := d.Logger
	if log == nil {
		log = zap.NewNop()
	}
	m := &Method{cfg: cfg, log: log.Named(api.Password), sem: make(chan struct{}, 1), user: cfg.User}
	if m.user == "" {
		u, err := user.Current()
		if err != nil {
			m.err = fmt.Errorf("password: cannot tell which user the agent runs as: %w", err)
		} else {
			m.user = u.Username
		}
	}
	return m
}

// Name is api.Password.
func (m *Method) Name() string { return api.Password }

// AMR is RFC 8176's "pwd".
func (m *Method) AMR() []string { return []string{"pwd"} }

// NeedsNoCredential: the OS account is the credential, so the method is
// usable without enrollment -- when PAM can be asked. Without the service
// file (or the user) it reports false, and the agent, finding no
// credential either, does not offer the method.
func (m *Method) NeedsNoCredential() bool {
	if m.err != nil {
		return false
	}
	m.svcMu.Lock()
	defer m.svcMu.Unlock()
	if now := time.Now(); now.Sub(m.svcChecked) >= serviceRecheck {
		_, err := serviceFile(m.cfg.Service, m.cfg.ConfDirs)
		m.svcOK, m.svcChecked = err == nil, now
	}
	return m.svcOK
}

// EnrollStart refuses: there is nothing to enroll.
func (m *Method) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	return nil, nil, api.Errorf(api.CodeInvalidParams, "the password method needs no enrollment")
}

// EnrollFinish refuses: there is nothing to enroll.
func (m *Method) EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*method.Credential, error) {
	return nil, api.Errorf(api.CodeInvalidParams, "the password method needs no enrollment")
}

// Start checks that PAM can be asked (the service file exists); the
// challenge is {}.
func (m *Method) Start(ctx context.Context, creds []*method.Credential) (any, any, error) {
	if m.err != nil {
		return nil, nil, m.err
	}
	if _, err := serviceFile(m.cfg.Service, m.cfg.ConfDirs); err != nil {
		return nil, nil, err
	}
	return struct{}{}, struct{}{}, nil
}

// Ask prompts for the user's login password.
func (m *Method) Ask(state any) method.Ask {
	return method.Ask{Prompt: "Password:", Description: fmt.Sprintf("Enter the login password of %s.", m.user), Field: "password"}
}

type response struct {
	Password string `json:"password"`
}

// Complete checks the password through PAM (authenticate, then account
// management) within ctx and cfg.Timeout. A wrong password takes about
// two seconds: pam_unix delays failures.
func (m *Method) Complete(ctx context.Context, state any, creds []*method.Credential, resp json.RawMessage) (*method.Credential, error) {
	var r response
	if err := json.Unmarshal(resp, &r); err != nil || r.Password == "" {
		return nil, method.ErrVerificationFailed
	}
	if m.err != nil {
		return nil, m.err
	}
	if _, err := serviceFile(m.cfg.Service, m.cfg.ConfDirs); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-m.sem }()
		done <- m.check(r.Password)
	}()
	select {
	case err := <-done:
		return nil, m.result(err)
	case <-ctx.Done():
		// PAM cannot be interrupted; the transaction finishes in the
		// background and holds the semaphore until it does.
		m.log.Warn("PAM check abandoned", zap.Error(ctx.Err()))
		return nil, ctx.Err()
	}
}

// result maps PAM's answer to the method's.
func (m *Method) result(err error) error {
	if err == nil {
		m.log.Info("password accepted", zap.String("user", m.user))
		return nil
	}
	var pe pam.Error
	if errors.As(err, &pe) {
		switch pe {
		case pam.ErrAuth, pam.ErrUserUnknown, pam.ErrMaxtries, pam.ErrCredInsufficient, pam.ErrPermDenied:
			m.log.Info("password refused", zap.String("user", m.user), zap.String("pam", pe.Error()))
			return method.ErrVerificationFailed
		case pam.ErrAcctExpired:
			m.log.Info("account expired", zap.String("user", m.user))
			return fmt.Errorf("%w: the account has expired", method.ErrVerificationFailed)
		case pam.ErrNewAuthtokReqd:
			m.log.Info("password expired", zap.String("user", m.user))
			return fmt.Errorf("%w: the password has expired; change it with passwd", method.ErrVerificationFailed)
		}
	}
	m.log.Warn("PAM failed", zap.String("service", m.cfg.Service), zap.Error(err))
	return api.Errorf(api.CodeInternal, "PAM could not check the password: %v", err).
		WithHint("see the agent's log and /etc/pam.d/%s", m.cfg.Service)
}

// check runs one PAM transaction. The conversation answers only
// PAM_PROMPT_ECHO_OFF, with the password; the password is never logged.
func (m *Method) check(password string) error {
	answered := 0
	tx, err := pam.StartFunc(m.cfg.Service, m.user, func(s pam.Style, msg string) (string, error) {
		switch s {
		case pam.PromptEchoOff:
			answered++
			if answered > 3 {
				return "", errors.New("too many password prompts")
			}
			return password, nil
		case pam.PromptEchoOn:
			return "", errors.New("PAM asked for visible input; only the password is answered")
		case pam.ErrorMsg:
			m.log.Debug("PAM error message", zap.String("msg", msg))
			return "", nil
		case pam.TextInfo:
			m.log.Debug("PAM info", zap.String("msg", msg))
			return "", nil
		}
		return "", errors.New("unsupported PAM conversation style")
	})
	if err != nil {
		return err
	}
	defer tx.End()
	start := time.Now()
	if err := tx.Authenticate(pam.DisallowNullAuthtok); err != nil {
		m.log.Debug("pam_authenticate failed", zap.Duration("took", time.Since(start)))
		return err
	}
	return tx.AcctMgmt(pam.DisallowNullAuthtok)
}
