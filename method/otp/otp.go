// Package otp implements the email_otp and sms_otp re-authentication
// methods: the agent sends a 6-digit one-time code to an enrolled address
// or phone number through the delivery the policy configures
// (policy.Delivery: SMTP for email, an HTTP webhook for SMS) and the user
// types it back.
//
// A code comes from crypto/rand, is valid for ten minutes and once: it is
// consumed by the first right answer, and dropped after MaxTries wrong
// ones (the agent's limiter counts every wrong answer as well). Only an
// HMAC of the code, under a key drawn for that code, is kept in memory;
// answers are compared in constant time. Codes never appear in a log line
// or an error.
//
// Resending is rate-limited: a new Start (or enrollStart) for the same
// destination within ResendInterval of the last delivery does not send
// again; it reuses the code already on its way, so the user types the
// code they have. After ResendInterval a new code is sent and the old one
// stops working: there is at most one live code per destination and
// purpose.
//
// docs/methods.md documents the methods for users.
package otp

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
)

// Settings of a code.
const (
	CodeDigits     = 6
	CodeLifetime   = 10 * time.Minute
	MaxTries       = 5
	ResendInterval = 30 * time.Second
	// SendTimeout bounds one delivery when the caller's context has no
	// earlier deadline.
	SendTimeout = 30 * time.Second
)

// SecretFunc returns a delivery secret from the keychain: the SMTP
// password, or the SMS webhook's token. An empty string means none is
// configured (no authentication).
type SecretFunc func(ctx context.Context) (string, error)

// sender delivers a code to a destination.
type sender interface {
	// send delivers text to dest; the text holds the code, so errors
	// must not quote it.
	send(ctx context.Context, dest, text string) error
}

// Config configures email_otp (NewEmail) or sms_otp (NewSMS).
type Config struct {
	method.Deps
	// Secret returns the delivery's secret from the keychain: the SMTP
	// password when delivery.smtp.username is set, or the SMS webhook's
	// token. nil means none.
	Secret SecretFunc
	// RootCAs makes deliveries trust only this pool for TLS (tests use it
	// for a self-signed server certificate); nil means the system roots.
	RootCAs *x509.CertPool
	// HTTPClient replaces the SMS webhook's HTTP client.
	HTTPClient *http.Client
}

// Method is email_otp or sms_otp.
type Method struct {
	name   string
	amr    []string
	log    *zap.Logger
	sender sender
	now    func() time.Time

	mu      sync.Mutex
	pending map[string]*pending // purpose + "\x00" + destination
}

// pending is one live code.
type pending struct {
	key     string // map key
	dest    string
	credID  string // "" for an enrollment
	mac     []byte // HMAC-SHA256(macKey, code)
	macKey  []byte
	sentAt  time.Time
	expires time.Time
	tries   int
	done    bool // consumed, expired or out of tries
}

// challengeState is the state handed to the agent by Start/EnrollStart.
type challengeState struct {
	p      *pending
	masked string
}

func newMethod(name string, amr []string, cfg Config, s sender) *Method {
	m := &Method{name: name, amr: amr, sender: s, now: cfg.Clock(), pending: map[string]*pending{}}
	m.log = cfg.Deps.Log("").With(zap.String("method", name))
	return m
}

// credSecret is Credential.Secret of both methods: the destination.
type credSecret struct {
	Address string `json:"address,omitempty"`
	Phone   string `json:"phone,omitempty"`
}

func (m *Method) dest(s credSecret) string {
	if m.name == api.EmailOTP {
		return s.Address
	}
	return s.Phone
}

// Name implements method.Method.
func (m *Method) Name() string { return m.name }

// AMR implements method.Method.
func (m *Method) AMR() []string { return append([]string(nil), m.amr...) }

// Ask implements method.Method.
func (m *Method) Ask(state any) method.Ask {
	a := method.Ask{Label: "SMS code:", Input: api.InputDigits, Field: "code"}
	if m.name == api.EmailOTP {
		a.Label = "Email code:"
	}
	if st, ok := state.(*challengeState); ok {
		a.Hint = "A code was sent to " + st.masked
	}
	return a
}

var (
	phoneRE = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
	emailRE = regexp.MustCompile(`^[^\s@<>()",;:\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$`)
)

// normalize checks and canonicalizes a destination.
func (m *Method) normalize(p method.EnrollParams) (string, error) {
	if m.name == api.EmailOTP {
		a := strings.TrimSpace(p.Address)
		if a == "" {
			return "", api.Errorf(api.CodeInvalidParams, "email_otp: enrollStart needs {address}")
		}
		if len(a) > 254 || !emailRE.MatchString(a) {
			return "", api.Errorf(api.CodeInvalidParams, "email_otp: %q is not an email address", a)
		}
		at := strings.LastIndexByte(a, '@')
		return a[:at] + "@" + strings.ToLower(a[at+1:]), nil
	}
	ph := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '(', ')', '.':
			return -1
		}
		return r
	}, strings.TrimSpace(p.Phone))
	if ph == "" {
		return "", api.Errorf(api.CodeInvalidParams, "sms_otp: enrollStart needs {phone}")
	}
	if !phoneRE.MatchString(ph) {
		return "", api.Errorf(api.CodeInvalidParams, "sms_otp: the phone number must be in E.164 form, like +15551234567")
	}
	return ph, nil
}

// Mask hides most of a destination: a***@example.com, +1******4567.
func Mask(dest string) string {
	if at := strings.LastIndexByte(dest, '@'); at >= 0 {
		local := dest[:at]
		first := ""
		if local != "" {
			r := []rune(local)
			first = string(r[0])
		}
		return first + "***" + dest[at:]
	}
	if strings.HasPrefix(dest, "+") && len(dest) > 6 {
		digits := dest[1:]
		return "+" + digits[:1] + strings.Repeat("*", len(digits)-5) + digits[len(digits)-4:]
	}
	return "***"
}

// EnrollStart implements method.Method: it sends a code to the address or
// phone in p; the result is {destination} (masked).
func (m *Method) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	dest, err := m.normalize(p)
	if err != nil {
		return nil, nil, err
	}
	st, err := m.issue(ctx, "enroll", dest, "")
	if err != nil {
		return nil, nil, err
	}
	return st, &api.OTPChallenge{Destination: st.masked}, nil
}

// codeResponse is the response of enrollFinish and completeVerification.
type codeResponse struct {
	Code string `json:"code"`
}

// EnrollFinish implements method.Method.
func (m *Method) EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*method.Credential, error) {
	st, ok := state.(*challengeState)
	if !ok || st.p.credID != "" {
		return nil, errors.New(m.name + ": enrollment state of another method")
	}
	if err := m.check(st.p, response); err != nil {
		return nil, err
	}
	sec := credSecret{}
	if m.name == api.EmailOTP {
		sec.Address = st.p.dest
	} else {
		sec.Phone = st.p.dest
	}
	raw, err := json.Marshal(sec)
	if err != nil {
		return nil, err
	}
	m.log.Info("destination verified for enrollment", zap.String("destination", st.masked))
	return &method.Credential{Method: m.name, Label: st.masked, Secret: raw}, nil
}

// Start implements method.Method: it sends a code to the oldest of creds
// and returns {destination} (masked).
func (m *Method) Start(ctx context.Context, r method.StartRequest) (any, any, error) {
	// The oldest enrolled destination gets the code.
	var mine []*method.Credential
	for _, c := range r.Creds {
		if c != nil && c.Method == m.name {
			mine = append(mine, c)
		}
	}
	sort.SliceStable(mine, func(i, j int) bool {
		if !mine[i].CreatedAt.Equal(mine[j].CreatedAt) {
			return mine[i].CreatedAt.Before(mine[j].CreatedAt)
		}
		return mine[i].ID < mine[j].ID
	})
	for _, c := range mine {
		var sec credSecret
		if err := json.Unmarshal(c.Secret, &sec); err != nil || m.dest(sec) == "" {
			m.log.Warn("credential without a destination", zap.String("credential", c.ID))
			continue
		}
		st, err := m.issue(ctx, "verify", m.dest(sec), c.ID)
		if err != nil {
			return nil, nil, err
		}
		return st, &api.OTPChallenge{Destination: st.masked}, nil
	}
	return nil, nil, api.Errorf(api.CodeNotEnrolled, "%s: no destination enrolled", m.name).
		WithHint("enroll one with `stepupctl enroll %s`", m.name)
}

// Complete implements method.Method.
func (m *Method) Complete(ctx context.Context, state any, creds []*method.Credential, response json.RawMessage) (*method.Credential, error) {
	st, ok := state.(*challengeState)
	if !ok || st.p.credID == "" {
		return nil, errors.New(m.name + ": verification state of another method")
	}
	var cred *method.Credential
	for _, c := range creds {
		if c != nil && c.ID == st.p.credID && c.Method == m.name {
			cred = c
		}
	}
	if cred == nil {
		// Removed while the code was on its way.
		m.drop(st.p)
		return nil, method.ErrVerificationFailed
	}
	if err := m.check(st.p, response); err != nil {
		return nil, err
	}
	return cred, nil
}

// issue sends a new code to dest, or reuses the live one sent less than
// ResendInterval ago.
func (m *Method) issue(ctx context.Context, purpose, dest, credID string) (*challengeState, error) {
	key := purpose + "\x00" + credID + "\x00" + dest
	masked := Mask(dest)
	now := m.now()
	m.mu.Lock()
	if p := m.pending[key]; p != nil && !p.done && now.Sub(p.sentAt) < ResendInterval && now.Before(p.expires) {
		m.mu.Unlock()
		m.log.Info("code resend suppressed: the last one was sent less than 30s ago", zap.String("destination", masked))
		return &challengeState{p: p, masked: masked}, nil
	}
	m.mu.Unlock()

	code, err := newCode()
	if err != nil {
		return nil, err
	}
	macKey := make([]byte, 32)
	if _, err := rand.Read(macKey); err != nil {
		return nil, err
	}
	p := &pending{key: key, dest: dest, credID: credID, macKey: macKey, mac: mac(macKey, code), sentAt: now, expires: now.Add(CodeLifetime)}
	text := fmt.Sprintf("Your stepup verification code is %s. It is valid for %d minutes. If you did not ask for it, someone may be using your computer: do not share it.", code, int(CodeLifetime/time.Minute))

	sctx := ctx
	// The context's deadline is on the wall clock, not the agent's.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > SendTimeout {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, SendTimeout)
		defer cancel()
	}
	if err := m.sender.send(sctx, dest, text); err != nil {
		err = scrub(err, code)
		m.log.Warn("code delivery failed", zap.String("destination", masked), zap.Error(err))
		return nil, fmt.Errorf("%s: could not send the code to %s: %w", m.name, masked, err)
	}
	m.mu.Lock()
	if old := m.pending[key]; old != nil {
		old.done = true // one live code per destination and purpose
	}
	m.pending[key] = p
	m.gcLocked(now)
	m.mu.Unlock()
	m.log.Info("code sent", zap.String("destination", masked), zap.String("purpose", purpose))
	return &challengeState{p: p, masked: masked}, nil
}

// gcLocked forgets expired codes.
func (m *Method) gcLocked(now time.Time) {
	for k, p := range m.pending {
		if p.done || !now.Before(p.expires) {
			p.done = true
			delete(m.pending, k)
		}
	}
}

func (m *Method) drop(p *pending) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.done = true
	if m.pending[p.key] == p {
		delete(m.pending, p.key)
	}
}

// check verifies response against p: once, in time, within MaxTries.
func (m *Method) check(p *pending, response json.RawMessage) error {
	var r codeResponse
	if err := json.Unmarshal(response, &r); err != nil {
		return api.Errorf(api.CodeInvalidParams, "%s: the response must be {code}", m.name)
	}
	code := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, r.Code)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	switch {
	case p.done:
		return method.ErrVerificationFailed
	case !now.Before(p.expires):
		p.done = true
		delete(m.pending, p.key)
		m.log.Info("code expired")
		return method.ErrVerificationFailed
	}
	got := mac(p.macKey, code)
	if len(code) != CodeDigits || !hmac.Equal(got, p.mac) {
		p.tries++
		if p.tries >= MaxTries {
			p.done = true
			if m.pending[p.key] == p {
				delete(m.pending, p.key)
			}
			m.log.Info("code dropped after too many wrong answers")
		}
		return method.ErrVerificationFailed
	}
	p.done = true // consumed
	if m.pending[p.key] == p {
		delete(m.pending, p.key)
	}
	return nil
}

func mac(key []byte, code string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(code))
	return h.Sum(nil)
}

// newCode returns CodeDigits decimal digits from crypto/rand.
func newCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

// scrub removes secrets from an error's text (a server that echoes what
// it received must not carry a code or password into a log line).
func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	changed := false
	for _, x := range secrets {
		if x != "" && strings.Contains(s, x) {
			s = strings.ReplaceAll(s, x, "[redacted]")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return errors.New(s)
}
