// Package recovery is the recovery_code verification method (MFA): ten
// single-use codes, generated when the first MFA credential is enrolled
// (or regenerated on request), shown to the user once and stored only as
// argon2id hashes.
//
// A code is twelve characters of Crockford's base32 alphabet (no i, l, o,
// u), written xxxx-xxxx-xxxx: 60 bits from crypto/rand. Case, dashes and
// spaces are ignored when a code is typed, and i/l read as 1, o as 0.
//
// Payloads (DESIGN.md, "Verification methods"): challenge {}, response
// {code}. enrollStart {method: "recovery_code"} regenerates the set; its
// result carries recoveryCodes, and the agent requires a credential:update
// token for it.
package recovery

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
	"golang.org/x/crypto/argon2"
)

// Count is how many codes a set holds.
const Count = 10

// alphabet is Crockford's base32: digits and letters without i, l, o, u.
const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// codeLen is the number of characters of a code, without dashes.
const codeLen = 12

// Params are the argon2id parameters of a set. They are stored with the
// hashes, so they can be raised later without breaking existing sets.
//
// The defaults are OWASP's second argon2id recommendation (19 MiB, two
// passes, one lane). Complete hashes the typed code once per unused code
// (each has its own salt): ten hashes take about 190 ms on a 2-core VM.
type Params struct {
	Time    uint32 `json:"t"`
	Memory  uint32 `json:"m"` // KiB
	Threads uint8  `json:"p"`
	KeyLen  uint32 `json:"len"`
}

// DefaultParams are used for new sets.
var DefaultParams = Params{Time: 2, Memory: 19 * 1024, Threads: 1, KeyLen: 32}

// secret is Credential.Secret of a recovery_code credential.
type secret struct {
	Version int     `json:"v"`
	KDF     string  `json:"kdf"` // "argon2id"
	Params  Params  `json:"params"`
	Codes   []entry `json:"codes"`
}

type entry struct {
	Salt   []byte     `json:"salt"`
	Hash   []byte     `json:"hash"`
	UsedAt *time.Time `json:"usedAt,omitempty"`
}

// Method is the recovery_code method. The zero value is not usable; call
// New.
type Method struct {
	log    *zap.Logger
	params Params
	now    func() time.Time
}

var (
	_ method.Method            = (*Method)(nil)
	_ method.Counter           = (*Method)(nil)
	_ method.RecoveryGenerator = (*Method)(nil)
)

// Config configures the recovery_code method.
type Config struct {
	method.Deps
}

// New returns the recovery_code method.
func New(cfg Config) *Method {
	return &Method{log: cfg.Log(api.RecoveryCode), params: DefaultParams, now: cfg.Clock()}
}

// Name is api.RecoveryCode.
func (m *Method) Name() string { return api.RecoveryCode }

// AMR: a recovery code is a one-time password (RFC 8176 "otp").
func (m *Method) AMR() []string { return []string{"otp"} }

// Generate makes a new set of codes and the credential holding their
// hashes. The codes are returned once; the agent shows them and forgets
// them.
func (m *Method) Generate(ctx context.Context) (*method.Credential, []string, error) {
	s := secret{Version: 1, KDF: "argon2id", Params: m.params}
	codes := make([]string, 0, Count)
	for range Count {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		raw, err := randomCode()
		if err != nil {
			return nil, nil, err
		}
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return nil, nil, err
		}
		s.Codes = append(s.Codes, entry{Salt: salt, Hash: hash(m.params, raw, salt)})
		codes = append(codes, format(raw))
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, nil, err
	}
	return &method.Credential{
		Method:    api.RecoveryCode,
		Label:     "Recovery codes",
		CreatedAt: m.now().UTC(),
		Secret:    b,
	}, codes, nil
}

// enrollState is kept by the agent between EnrollStart and EnrollFinish.
type enrollState struct{ cred *method.Credential }

// EnrollStart regenerates the set: the new codes are in result
// (recoveryCodes), and EnrollFinish (any response, {} will do) returns the
// credential that replaces the old set. The agent requires a
// credential:update token for it.
func (m *Method) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	cred, codes, err := m.Generate(ctx)
	if err != nil {
		return nil, nil, err
	}
	if p.Label != "" {
		cred.Label = p.Label
	}
	m.log.Info("recovery codes generated", zap.Int("count", len(codes)))
	return &enrollState{cred: cred}, &api.RecoveryEnrollment{RecoveryCodes: codes}, nil
}

// EnrollFinish returns the credential made by EnrollStart.
func (m *Method) EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*method.Credential, error) {
	st, ok := state.(*enrollState)
	if !ok || st == nil || st.cred == nil {
		return nil, errors.New("recovery: no enrollment in progress")
	}
	return st.cred, nil
}

// Start checks that some code is left; the challenge is {}.
func (m *Method) Start(ctx context.Context, r method.StartRequest) (any, any, error) {
	left := 0
	for _, c := range r.Creds {
		left += m.Remaining(c)
	}
	if left == 0 {
		return nil, nil, api.Errorf(api.CodeNotEnrolled, "no recovery code is left").
			WithHint("generate new ones with `stepupctl enroll recovery_code`")
	}
	return struct{}{}, struct{}{}, nil
}

// Ask prompts for a code.
func (m *Method) Ask(state any) method.Ask {
	return method.Ask{Label: "Recovery code:", Input: api.InputCode, Field: "code", Hint: "Enter one of your unused recovery codes (each works once)."}
}

type response struct {
	Code string `json:"code"`
}

// Complete checks the code against every unused code of every credential
// given, marks the one that matched as used, and returns that credential
// with its Secret updated. Every unused hash is computed whatever matches,
// so the time taken does not say which code (if any) it was.
func (m *Method) Complete(ctx context.Context, state any, creds []*method.Credential, resp json.RawMessage) (*method.Credential, error) {
	var r response
	if err := json.Unmarshal(resp, &r); err != nil {
		return nil, method.ErrVerificationFailed
	}
	raw, ok := normalize(r.Code)
	if !ok {
		return nil, method.ErrVerificationFailed
	}
	var (
		match    *method.Credential
		matchSec secret
		matchIdx = -1
	)
	for _, c := range creds {
		if c == nil || c.Method != api.RecoveryCode {
			continue
		}
		s, err := parse(c)
		if err != nil {
			m.log.Warn("unreadable recovery code credential", zap.String("credential", c.ID), zap.Error(err))
			continue
		}
		for i, e := range s.Codes {
			if e.UsedAt != nil {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			h := hash(s.Params, raw, e.Salt)
			if subtle.ConstantTimeCompare(h, e.Hash) == 1 && match == nil {
				match, matchSec, matchIdx = c, s, i
			}
		}
	}
	if match == nil {
		return nil, method.ErrVerificationFailed
	}
	now := m.now().UTC()
	matchSec.Codes[matchIdx].UsedAt = &now
	b, err := json.Marshal(matchSec)
	if err != nil {
		return nil, err
	}
	out := *match
	out.Secret = b
	m.log.Info("recovery code used", zap.String("credential", out.ID), zap.Int("remaining", m.Remaining(&out)))
	return &out, nil
}

// Remaining returns the number of unused codes of c.
func (m *Method) Remaining(c *method.Credential) int {
	if c == nil || c.Method != api.RecoveryCode {
		return 0
	}
	s, err := parse(c)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range s.Codes {
		if e.UsedAt == nil {
			n++
		}
	}
	return n
}

func parse(c *method.Credential) (secret, error) {
	var s secret
	if err := json.Unmarshal(c.Secret, &s); err != nil {
		return s, fmt.Errorf("recovery: bad secret: %w", err)
	}
	if s.KDF != "argon2id" || s.Params.Time == 0 || s.Params.Memory == 0 || s.Params.Threads == 0 || s.Params.KeyLen < 16 {
		return s, errors.New("recovery: unsupported key derivation")
	}
	return s, nil
}

func hash(p Params, raw string, salt []byte) []byte {
	return argon2.IDKey([]byte(raw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
}

// randomCode returns codeLen characters of alphabet, uniformly (32 divides
// 256, so a byte's low five bits are uniform).
func randomCode() (string, error) {
	b := make([]byte, codeLen)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[b[i]&31]
	}
	return string(b), nil
}

// format writes a raw code as xxxx-xxxx-xxxx.
func format(raw string) string {
	return raw[0:4] + "-" + raw[4:8] + "-" + raw[8:12]
}

// normalize turns what the user typed into a raw code: lower case, no
// dashes or white space, Crockford's i/l -> 1 and o -> 0. It reports
// false for anything that cannot be a code.
func normalize(s string) (string, bool) {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r == '-' || r == ' ' || r == '\t' || r == '\n' || r == '\r':
			continue
		case r == 'i' || r == 'l':
			r = '1'
		case r == 'o':
			r = '0'
		}
		if r > 0x7f || !strings.ContainsRune(alphabet, r) {
			return "", false
		}
		b.WriteRune(r)
		if b.Len() > codeLen {
			return "", false
		}
	}
	if b.Len() != codeLen {
		return "", false
	}
	return b.String(), true
}
