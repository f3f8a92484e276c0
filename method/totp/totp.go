// Package totp is the TOTP method (RFC 6238): authenticator apps. Codes
// come from github.com/pquerna/otp (the widely used Go implementation,
// compatible with Google Authenticator and oathtool); this package adds
// what an agent needs on top: ±1 step of clock skew, a counter that is
// never accepted twice, and constant-time comparison.
package totp

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
)

const (
	period = 30
	skew   = 1
)

// secret is Credential.Secret for TOTP.
type secret struct {
	Key         string `json:"key"` // base32
	Digits      int    `json:"digits"`
	LastCounter uint64 `json:"lastCounter"`
}

// Config configures the TOTP method.
type Config struct {
	method.Deps
	// Issuer names the agent in authenticator apps; empty means
	// "stepup-agent".
	Issuer string
}

// Method is the TOTP method.
type Method struct {
	now    func() time.Time
	issuer string
}

// New returns the TOTP method.
func New(cfg Config) *Method {
	if cfg.Issuer == "" {
		cfg.Issuer = "stepup-agent"
	}
	return &Method{now: cfg.Clock(), issuer: cfg.Issuer}
}

func (m *Method) Name() string  { return api.TOTP }
func (m *Method) AMR() []string { return []string{"otp"} }

type enrollState struct{ key string }

type codeResponse struct {
	Code string `json:"code"`
}

func account() string {
	name := "user"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	if host != "" {
		name += "@" + host
	}
	return name
}

// EnrollStart makes a new secret; the result carries it and its otpauth URI.
func (m *Method) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	acct := account()
	if p.Label != "" {
		acct = p.Label
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: m.issuer, AccountName: acct, Period: period, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return nil, nil, err
	}
	return &enrollState{key: key.Secret()}, &api.TOTPEnrollment{Secret: key.Secret(), OtpauthURI: key.URL()}, nil
}

// EnrollFinish confirms the secret with a code from the app.
func (m *Method) EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*method.Credential, error) {
	st, ok := state.(*enrollState)
	if !ok {
		return nil, errors.New("totp: bad enrollment state")
	}
	code, err := parseCode(response)
	if err != nil {
		return nil, err
	}
	s := &secret{Key: st.key, Digits: 6}
	ctr, ok := m.match(s, code)
	if !ok {
		return nil, method.ErrVerificationFailed
	}
	s.LastCounter = ctr
	raw, _ := json.Marshal(s)
	return &method.Credential{Method: api.TOTP, Label: "authenticator app", Secret: raw}, nil
}

// Start needs nothing: the challenge is {}.
func (m *Method) Start(ctx context.Context, r method.StartRequest) (any, any, error) {
	if len(r.Creds) == 0 {
		return nil, nil, fmt.Errorf("totp: no credential")
	}
	return nil, struct{}{}, nil
}

// Complete accepts a code of any of creds whose counter was not used yet.
func (m *Method) Complete(ctx context.Context, state any, creds []*method.Credential, response json.RawMessage) (*method.Credential, error) {
	code, err := parseCode(response)
	if err != nil {
		return nil, err
	}
	used := false
	for _, c := range creds {
		var s secret
		if err := json.Unmarshal(c.Secret, &s); err != nil {
			continue
		}
		ctr, ok := m.match(&s, code)
		if ok && ctr <= s.LastCounter {
			used = true
		}
		if !ok || ctr <= s.LastCounter {
			continue
		}
		s.LastCounter = ctr
		out := *c
		out.Secret, _ = json.Marshal(&s)
		return &out, nil
	}
	if used {
		return nil, method.ErrCodeUsed
	}
	return nil, method.ErrVerificationFailed
}

// Ask prompts for the six digits.
func (m *Method) Ask(any) method.Ask {
	return method.Ask{Label: "Code:", Input: api.InputDigits, Field: "code", Hint: "Enter the 6-digit code from your authenticator app."}
}

// match returns the counter whose code equals code, within ±skew steps.
// Every candidate is compared in constant time.
func (m *Method) match(s *secret, code string) (uint64, bool) {
	now := uint64(m.now().Unix()) / period
	var found uint64
	ok := 0
	for d := -skew; d <= skew; d++ {
		ctr := now + uint64(d)
		want, err := hotp.GenerateCodeCustom(s.Key, ctr, hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			found, ok = ctr, 1
		}
	}
	return found, ok == 1
}

func parseCode(response json.RawMessage) (string, error) {
	var r codeResponse
	if err := json.Unmarshal(response, &r); err != nil {
		return "", fmt.Errorf("%w: response must be {\"code\": \"123456\"}", method.ErrVerificationFailed)
	}
	code := strings.ReplaceAll(strings.TrimSpace(r.Code), " ", "")
	if len(code) != 6 {
		return "", fmt.Errorf("%w: a TOTP code has 6 digits", method.ErrVerificationFailed)
	}
	for _, ch := range code {
		if ch < '0' || ch > '9' {
			return "", fmt.Errorf("%w: a TOTP code has 6 digits", method.ErrVerificationFailed)
		}
	}
	return code, nil
}
