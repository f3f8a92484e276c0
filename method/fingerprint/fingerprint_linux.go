//go:build linux

// Package fingerprint is the fingerprint MFA method (amr "fpt"), through
// fprintd's D-Bus API on the system bus. Enrolling fingers stays
// fprintd's job (fprintd-enroll); enrolling the method registers that the
// user's enrolled fingers may answer step-ups. A verification claims the
// default reader, verifies "any" enrolled finger, shows fprintd's retry
// messages, and releases the reader on every path.
package fingerprint

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/method/fingerprint/fprintd"
)

// Name is the method's wire name.
const Name = "fingerprint"

// Config tunes the method; the zero value is fprintd's and pam_fprintd's
// usual behaviour.
type Config struct {
	// Deps: the clock times the availability cache; the policy in force
	// is read at each verification for its timeout and tries
	// (fingerprint.timeout, fingerprint.maxTries), whose zero values keep
	// Timeout and MaxTries.
	method.Deps
	// Timeout bounds one verification (default 30s, pam_fprintd's).
	Timeout time.Duration
	// MaxTries is how many no-matches end a verification (default 3).
	MaxTries int
}

var (
	_ method.Method       = (*Method)(nil)
	_ method.Waiter       = (*Method)(nil)
	_ method.Availability = (*Method)(nil)
	_ method.Armed        = (*Method)(nil)
)

// Armed: Start arms the reader and the verification runs by itself, so a
// prompt may offer the fingerprint beside a typed code.
func (m *Method) Armed() bool { return true }

// Method is the fingerprint method.
type Method struct {
	cfg Config
	now func() time.Time

	mu      sync.Mutex
	checked time.Time
	avail   error // nil: a reader is there and fingers are enrolled
	probing bool
}

// New returns the fingerprint method.
func New(cfg Config) *Method {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxTries <= 0 {
		cfg.MaxTries = 3
	}
	return &Method{cfg: cfg, now: cfg.Clock()}
}

func (m *Method) Name() string  { return Name }
func (m *Method) AMR() []string { return []string{"fpt"} }

// secret is Credential.Secret: the fingers fprintd had enrolled when the
// method was enrolled (informational; fprintd decides at each verify).
type secret struct {
	Fingers []string `json:"fingers"`
}

type enrollState struct{ fingers []string }

// availTTL is how long an availability answer is reused: isStepUpRequired
// lists the method only where a reader is present and fingers are
// enrolled, and must never wait on the system bus.
const availTTL = 10 * time.Second

// errNotChecked is the answer before the first probe has finished.
var errNotChecked = errors.New("the fingerprint reader has not been checked yet")

// Available reports whether a verification can run now: fprintd is
// there, it has a reader, this user has fingers enrolled, and polkit lets
// this process use it. It never blocks: it returns the last answer and,
// when that is older than a few seconds, asks fprintd again in the
// background (the first call answers errNotChecked).
func (m *Method) Available() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if (m.checked.IsZero() || m.now().Sub(m.checked) >= availTTL) && !m.probing {
		m.probing = true
		go m.refresh()
	}
	if m.checked.IsZero() {
		return errNotChecked
	}
	return m.avail
}

// Probe asks fprintd now and returns the answer Available gives from then
// on (for enrollment, status and tests).
func (m *Method) Probe(ctx context.Context) error {
	err := m.probe(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checked, m.avail = m.now(), err
	return err
}

func (m *Method) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := m.probe(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checked, m.avail, m.probing = m.now(), err, false
}

func (m *Method) probe(ctx context.Context) error {
	_, err := m.fingers(ctx)
	return err
}

// fingers connects and lists the enrolled fingers on the default reader.
func (m *Method) fingers(ctx context.Context) ([]string, error) {
	c, err := fprintd.Connect(ctx)
	if err != nil {
		return nil, userError(err)
	}
	defer c.Close()
	dev, err := c.DefaultDevice(ctx)
	if err != nil {
		return nil, userError(err)
	}
	f, err := c.EnrolledFingers(ctx, dev)
	if err != nil {
		return nil, userError(err)
	}
	return f, nil
}

// userError turns an fprintd failure into the protocol error a person can
// act on.
func userError(err error) error {
	switch {
	case errors.Is(err, fprintd.ErrPermissionDenied):
		return api.Errorf(api.CodeNoPrompter, "%s", err.Error()).
			WithHint("fprintd lets only an active local session verify by default: run the agent in your desktop session, or allow net.reactivated.fprint.device.verify for your user in a polkit rule (docs/methods.md); meanwhile use another factor")
	case errors.Is(err, fprintd.ErrBusy):
		return api.Errorf(api.CodeNoPrompter, "%s", err.Error()).
			WithHint("finish or cancel the other program's fingerprint prompt and try again, or use another factor")
	case errors.Is(err, fprintd.ErrNoFingers):
		return api.Errorf(api.CodeNotEnrolled, "%s", err.Error()).
			WithHint("enroll a finger with fprintd-enroll, then stepupctl enroll fingerprint")
	case errors.Is(err, fprintd.ErrNoDevice), errors.Is(err, fprintd.ErrUnavailable):
		return api.Errorf(api.CodeNotEnrolled, "%s", err.Error()).
			WithHint("connect a fingerprint reader and install fprintd (apt-get install fprintd), or use another factor")
	}
	return err
}

// EnrollStart lists the fingers fprintd has enrolled for this user.
func (m *Method) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	f, err := m.fingers(ctx)
	if err != nil {
		return nil, nil, err
	}
	return &enrollState{fingers: f}, &api.FingerprintEnrollment{Fingers: f}, nil
}

// EnrollFinish registers the fingers; the response is {}.
func (m *Method) EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*method.Credential, error) {
	st, ok := state.(*enrollState)
	if !ok {
		return nil, errors.New("fingerprint: bad enrollment state")
	}
	raw, _ := json.Marshal(secret{Fingers: st.fingers})
	label := "fingerprint reader (" + strings.Join(st.fingers, ", ") + ")"
	return &method.Credential{Method: Name, Label: label, Secret: raw}, nil
}

// session is one verification: it runs from Start until a match, a
// failure, its timeout or a cancel, and then releases the reader.
type session struct {
	c      *fprintd.Client
	v      *fprintd.Verification
	cancel context.CancelFunc

	mu      sync.Mutex
	status  string        // the latest progress message
	changed chan struct{} // closed when status changes, then replaced
}

// Start claims the reader and starts verifying. The verification outlives
// the call (startVerification returns at once; the answer is the touch),
// bounded by the method's timeout; a hang-up cancels it through Wait or
// Complete.
func (m *Method) Start(ctx context.Context, r method.StartRequest) (any, any, error) {
	if len(r.Creds) == 0 {
		return nil, nil, errors.New("fingerprint: no credential")
	}
	c, err := fprintd.Connect(ctx)
	if err != nil {
		return nil, nil, userError(err)
	}
	dev, err := c.DefaultDevice(ctx)
	if err != nil {
		c.Close()
		return nil, nil, userError(err)
	}
	timeout, tries := m.cfg.Timeout, m.cfg.MaxTries
	if m.cfg.Policy != nil {
		if p := m.cfg.Policy(); p != nil {
			timeout, tries = cmp.Or(p.Fingerprint.Timeout.D(), timeout), cmp.Or(p.Fingerprint.MaxTries, tries)
		}
	}
	vctx, cancel := context.WithTimeout(context.Background(), timeout)
	v, err := c.Verify(vctx, dev, tries)
	if err != nil {
		cancel()
		c.Close()
		return nil, nil, userError(err)
	}
	s := &session{c: c, v: v, cancel: cancel, status: "Touch the fingerprint reader.", changed: make(chan struct{})}
	go func() {
		for e := range v.Events() {
			s.mu.Lock()
			s.status = e.Message
			if e.Result != "verify-match" && e.Result != "finger-selected" {
				close(s.changed)
				s.changed = make(chan struct{})
			}
			s.mu.Unlock()
		}
		<-v.Done()
		cancel()
		c.Close()
	}()
	return s, struct{}{}, nil
}

// Status is the latest progress message of a verification (fprintd's
// retry-scan and the like), for a prompt that shows it.
func (m *Method) Status(state any) string {
	msg, _ := m.Progress(state)
	return msg
}

// Progress is the latest progress message and a channel closed when a
// newer one a person should read arrives (retry-scan, no-match and the
// like; not the match itself), for the prompt that offers the reader.
func (m *Method) Progress(state any) (string, <-chan struct{}) {
	s, ok := state.(*session)
	if !ok {
		return "", nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status, s.changed
}

// Events reports a verification's progress; closed when it ends.
func (m *Method) Events(state any) <-chan fprintd.Event {
	if s, ok := state.(*session); ok {
		return s.v.Events()
	}
	return nil
}

// wait blocks until the verification ends or ctx does; when ctx ends
// first (the client hung up, the prompt was dismissed) it stops the
// verification and waits for the reader to be released.
func (s *session) wait(ctx context.Context) error {
	select {
	case <-s.v.Done():
	case <-ctx.Done():
		s.cancel()
		<-s.v.Done()
		return ctx.Err()
	}
	return s.v.Err()
}

// Wait blocks until fprintd reports the result; the response is {}.
func (m *Method) Wait(ctx context.Context, state any) (json.RawMessage, error) {
	s, ok := state.(*session)
	if !ok {
		return nil, errors.New("fingerprint: bad verification state")
	}
	select {
	case <-s.v.Done():
	case <-ctx.Done():
		s.cancel()
		<-s.v.Done()
		return nil, ctx.Err()
	}
	return json.RawMessage(`{}`), nil
}

// Complete succeeds only when fprintd reported a match for this
// verification; the response is ignored (a client cannot claim a touch).
func (m *Method) Complete(ctx context.Context, state any, creds []*method.Credential, response json.RawMessage) (*method.Credential, error) {
	s, ok := state.(*session)
	if !ok || len(creds) == 0 {
		return nil, method.ErrVerificationFailed
	}
	err := s.wait(ctx)
	switch {
	case err == nil:
		out := *creds[0]
		return &out, nil
	case errors.Is(err, fprintd.ErrNoMatch):
		return nil, fmt.Errorf("%w: the fingerprint did not match", method.ErrVerificationFailed)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return nil, fmt.Errorf("nobody touched the fingerprint reader in time: %w", context.DeadlineExceeded)
	}
	return nil, userError(err)
}

// Ask: nothing is typed; the prompt offers Cancel while the reader waits.
func (m *Method) Ask(any) method.Ask {
	return method.Ask{Label: "Fingerprint:", Input: api.InputNone, Hint: "Touch the fingerprint reader."}
}

// SingleShot: a finished verification cannot be answered again; after a
// failure the agent starts a new one.
func (m *Method) SingleShot() bool { return true }

// Unavailable says why New would return nil; on Linux it never does.
const Unavailable = ""
