// Package password is the password verification method
// (re-authentication): the user's own OS login password, checked through
// PAM with the service file packaging/pam/stepup-agent (installed as
// /etc/pam.d/stepup-agent).
//
// PAM never runs inside the agent. Each check starts stepup-pam-helper
// (cmd/stepup-pam-helper, the project's only cgo program), hands it the
// password on a pipe (package pamproto) and reads one answer; the agent
// itself builds without cgo. A PAM module that crashes takes down the
// helper only; one that hangs is killed with the helper when the check
// times out or the client hangs up.
//
// The helper checks the password of the user it runs as, which is the
// agent's: PAM's pam_unix, run by an unprivileged process, asks the
// setgid helper unix_chkpwd, which checks only the caller's own password.
//
// The method is offered when the helper is installed (Config.Helper, else
// next to the agent's executable, else in ../libexec/stepup-agent/ beside
// it) and the PAM service file exists; otherwise Unavailable says why and
// what to do, and isStepUpRequired does not offer the method.
//
// Payloads (DESIGN.md, "Verification methods"): no enrollment (the OS
// account is the credential); challenge {}; response {password}.
package password

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
)

// DefaultService is the PAM service name.
const DefaultService = "stepup-agent"

// HelperName is the helper's file name.
const HelperName = "stepup-pam-helper"

// DefaultTimeout bounds one PAM check (PAM modules can block: LDAP, a
// slow NSS, pam_faildelay).
const DefaultTimeout = 30 * time.Second

// Config configures the method. The zero value checks the agent's own
// user through the stepup-agent service with the helper installed beside
// the agent.
type Config struct {
	method.Deps
	// Service is the PAM service name (a file of that name in
	// /etc/pam.d).
	Service string
	// Helper is the path of stepup-pam-helper (stepup-agent
	// --pam-helper). Empty: HelperName next to the agent's executable,
	// then ../libexec/stepup-agent/HelperName relative to it.
	Helper string
	// Timeout bounds one check; DefaultTimeout when zero.
	Timeout time.Duration
	// ConfDirs are where the service file is looked for before PAM is
	// asked, so a missing file is a clear error rather than PAM's
	// fallback to its "other" service. Default /etc/pam.d, /usr/lib/pam.d.
	ConfDirs []string
}

// DefaultConfDirs are the directories Linux-PAM reads service files from.
var DefaultConfDirs = []string{"/etc/pam.d", "/usr/lib/pam.d"}

// Method is the password method. Create it with New.
type Method struct {
	cfg  Config
	log  *zap.Logger
	user string // for the prompt only; the helper finds the user itself

	// Tests: run the helper as another user, learn its pid, find the
	// agent's executable elsewhere.
	cred    *syscall.Credential
	started func(pid int)
	exe     func() (string, error)
	nnp     func() bool

	// Availability, checked at most every recheck: isStepUpRequired asks
	// for it on every call, and a stat per request showed in the
	// benchmarks. The answer is read without a lock or a wall-clock
	// read (the age is the monotonic clock's, time.Since); mu serializes
	// the probes.
	mu     sync.Mutex
	avail  atomic.Pointer[availability]
	logged string // the last availability logged
}

// availability is one probe's answer.
type availability struct {
	helper string     // the helper found
	why    *api.Error // nil when available
	at     time.Time  // when probed, with its monotonic reading
}

const recheck = 5 * time.Second

var (
	_ method.Method       = (*Method)(nil)
	_ method.NoCredential = (*Method)(nil)
)

// New returns the password method for the user the agent runs as. It is
// never nil; when the helper or the PAM service file is missing the
// method is not offered and Unavailable says why.
func New(cfg Config) *Method {
	if cfg.Service == "" {
		cfg.Service = DefaultService
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	m := &Method{cfg: cfg, log: cfg.Log(api.Password), exe: os.Executable, nnp: noNewPrivs}
	if u, err := user.Current(); err == nil {
		m.user = u.Username
	}
	return m
}

// Name is api.Password.
func (m *Method) Name() string { return api.Password }

// AMR is RFC 8176's "pwd".
func (m *Method) AMR() []string { return []string{"pwd"} }

// Unavailable returns nil when the method can check passwords, else an
// error (4006, not_enrolled) that says what is missing and, in its hint,
// how to install it. The agent logs it at start; Start returns it.
func (m *Method) Unavailable() error {
	if _, why := m.availability(); why != nil {
		return why
	}
	return nil
}

// NeedsNoCredential: the OS account is the credential, so the method is
// usable without enrollment -- when the helper and the PAM service file
// are installed. Otherwise it reports false, and the agent, finding no
// credential either, does not offer the method.
func (m *Method) NeedsNoCredential() bool {
	_, why := m.availability()
	return why == nil
}

// availability returns the helper's path, or why the method cannot be
// used, rechecked at most every recheck.
func (m *Method) availability() (string, *api.Error) {
	if c := m.avail.Load(); c != nil && time.Since(c.at) < recheck {
		return c.helper, c.why
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.avail.Load(); c != nil && time.Since(c.at) < recheck {
		return c.helper, c.why // probed while this call waited
	}
	helper, why := m.probe()
	m.avail.Store(&availability{helper: helper, why: why, at: time.Now()})
	if s := fmt.Sprint(why); s != m.logged {
		m.logged = s
		if why != nil {
			m.log.Info("password method unavailable", zap.String("why", why.Message), zap.String("hint", why.Data.Hint))
		} else {
			m.log.Info("password method available", zap.String("helper", helper), zap.String("service", m.cfg.Service))
		}
	}
	return helper, why
}

// probe finds the helper and the service file.
func (m *Method) probe() (string, *api.Error) {
	helper, err := m.findHelper()
	if err != nil {
		return "", err
	}
	if _, err := serviceFile(m.cfg.Service, m.cfg.ConfDirs); err != nil {
		return "", err
	}
	// The helper inherits no_new_privs: pam_unix's setgid unix_chkpwd
	// then cannot read /etc/shadow, and every password, right or wrong,
	// would be refused and counted as a failure (checked on Debian 12;
	// method/password's TestNoNewPrivsRefusesEveryPassword).
	if m.nnp() {
		return "", api.Errorf(api.CodeNotEnrolled, "password checks cannot work here: the agent runs with no_new_privs (systemd's NoNewPrivileges= or a sandboxing option), so pam_unix's setgid helper unix_chkpwd cannot read /etc/shadow and every password would be refused").
			WithHint("relax the service with a drop-in (docs/systemd.md, \"Hardening, and what it costs\"), or use totp or a passkey")
	}
	return helper, nil
}

// helperHint says how to get the helper.
const helperHint = "build and install it next to stepup-agent where libpam's headers are (Debian: sudo apt-get install libpam0g-dev), " +
	"e.g. packaging/install.sh, or go build -o DIR/ ./cmd/stepup-pam-helper; or name it with stepup-agent --pam-helper PATH (docs/methods.md, \"password\")"

// findHelper returns the helper's path: cfg.Helper, else the first of
// the default places that holds one.
func (m *Method) findHelper() (string, *api.Error) {
	if m.cfg.Helper != "" {
		if err := safeExecutable(m.cfg.Helper); err != nil {
			return "", api.Errorf(api.CodeNotEnrolled, "password checks need %s: %v", HelperName, err).WithHint(helperHint)
		}
		return m.cfg.Helper, nil
	}
	exe, err := m.exe()
	if err != nil {
		return "", api.Errorf(api.CodeNotEnrolled, "password checks need %s, and the agent cannot tell where its own executable is: %v", HelperName, err).
			WithHint("name the helper with stepup-agent --pam-helper PATH")
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	dir := filepath.Dir(exe)
	places := []string{filepath.Join(dir, HelperName), filepath.Join(filepath.Dir(dir), "libexec", "stepup-agent", HelperName)}
	for _, p := range places {
		err := safeExecutable(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			// Present but unsafe or unusable: say so rather than look on.
			return "", api.Errorf(api.CodeNotEnrolled, "password checks need %s: %v", HelperName, err).WithHint(helperHint)
		}
	}
	return "", api.Errorf(api.CodeNotEnrolled, "password checks need %s, which is not installed (looked for %s and %s)", HelperName, places[0], places[1]).
		WithHint(helperHint)
}

// safeExecutable checks that p is an executable regular file that only
// root or the agent's user can change: the agent hands it the password.
func safeExecutable(p string) error {
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s does not exist: %w", p, os.ErrNotExist)
	}
	if err != nil {
		return err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable (chmod 755 it)", p)
	}
	if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		return fmt.Errorf("%s is setuid or setgid; it must not be (chmod 755 it)", p)
	}
	for _, q := range []string{real, filepath.Dir(real)} {
		if err := ownedSafely(q); err != nil {
			return err
		}
	}
	return nil
}

// ownedSafely checks that q belongs to root or the agent's user and that
// nobody else may write it.
func ownedSafely(q string) error {
	fi, err := os.Stat(q)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, neither root nor you", q, st.Uid)
	}
	// A sticky directory (/tmp) lets nobody else rename or remove the file.
	if fi.Mode().Perm()&0o022 != 0 && !(fi.IsDir() && fi.Mode()&os.ModeSticky != 0) {
		return fmt.Errorf("others can write %s (chmod go-w it)", q)
	}
	return nil
}

// serviceFile returns the path of the service's file, or an error that
// says how to install it.
func serviceFile(service string, dirs []string) (string, *api.Error) {
	if len(dirs) == 0 {
		dirs = DefaultConfDirs
	}
	for _, d := range dirs {
		p := filepath.Join(d, service)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", api.Errorf(api.CodeNotEnrolled, "the PAM service file %s cannot be read: %v", p, err)
		}
	}
	return "", api.Errorf(api.CodeNotEnrolled, "password checks need the PAM service file %s, which is missing",
		filepath.Join(dirs[0], service)).
		WithHint("install it: sudo install -m 644 packaging/pam/stepup-agent %s", filepath.Join(dirs[0], service))
}

// EnrollStart refuses: there is nothing to enroll.
func (m *Method) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	return nil, nil, api.Errorf(api.CodeInvalidParams, "the password method needs no enrollment")
}

// EnrollFinish refuses: there is nothing to enroll.
func (m *Method) EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*method.Credential, error) {
	return nil, api.Errorf(api.CodeInvalidParams, "the password method needs no enrollment")
}

// Start checks that PAM can be asked (the helper and the service file
// are there); the challenge is {}.
func (m *Method) Start(ctx context.Context, r method.StartRequest) (any, any, error) {
	if _, why := m.availability(); why != nil {
		return nil, nil, why
	}
	return struct{}{}, struct{}{}, nil
}

// Ask prompts for the user's login password.
func (m *Method) Ask(state any) method.Ask {
	d := "Enter your login password."
	if m.user != "" {
		d = fmt.Sprintf("Enter the login password of %s.", m.user)
	}
	return method.Ask{Label: "Password:", Input: api.InputPassword, Field: "password", Hint: d}
}

type response struct {
	Password string `json:"password"`
}

// Complete checks the password through the helper within ctx and
// cfg.Timeout. A wrong password takes about two seconds: pam_unix delays
// failures. The outcomes are distinct: nil (right), an error wrapping
// method.ErrVerificationFailed (wrong, or an expired account or
// password), ctx.Err() (the caller gave up: the helper was killed and the
// answer is unknown), or an *api.Error (-32603) when PAM or the helper
// failed or PAM did not answer within cfg.Timeout.
func (m *Method) Complete(ctx context.Context, state any, creds []*method.Credential, resp json.RawMessage) (*method.Credential, error) {
	var r response
	if err := json.Unmarshal(resp, &r); err != nil || r.Password == "" {
		return nil, method.ErrVerificationFailed
	}
	helper, why := m.availability()
	if why != nil {
		return nil, why
	}
	return nil, m.check(ctx, helper, r.Password)
}
