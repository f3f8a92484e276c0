// Package wallet is the wallet verification method (re-authentication):
// the user proves control of an enrolled Ethereum address by signing a
// Sign-In with Ethereum message (EIP-4361) with personal_sign (EIP-191).
//
// The agent writes the message: its domain, the enrolled address (EIP-55),
// a statement naming the scopes, URI, Version 1, Chain ID, a fresh nonce,
// Issued At and Expiration Time (five minutes later). The signature is
// checked by recovering the signer's public key (secp256k1 from
// github.com/decred/dcrd/dcrec/secp256k1/v4, Keccak-256 from
// golang.org/x/crypto/sha3; both far lighter than go-ethereum) and
// comparing its address with the enrolled one. v may be 27/28 or 0/1; a
// high-S signature (EIP-2) is refused; each challenge can be answered once
// (its first Complete consumes it, right or wrong), and not after it
// expires.
//
// Payloads (DESIGN.md, "Verification methods"): enrollStart {address} ->
// {enrollmentId, message}, enrollFinish {signature}; challenge {message};
// response {signature} (0x hex, 65 bytes r||s||v).
package wallet

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
)

// Config configures the wallet method: the agent's Deps, and the values
// of the EIP-4361 message. The zero value gives domain "localhost", URI
// "http://localhost", chain ID 1 and five minutes.
type Config struct {
	method.Deps
	Domain  string        // the authority that asks for the signature
	URI     string        // the RFC 3986 URI the sign-in is for
	ChainID int           // EIP-155 chain ID; 1 is Ethereum mainnet
	TTL     time.Duration // from Issued At to Expiration Time
}

// DefaultTTL is how long a message may be signed.
const DefaultTTL = 5 * time.Minute

// Method is the wallet method. Create it with New.
type Method struct {
	cfg Config
	now func() time.Time
	log *zap.Logger
}

var _ method.Method = (*Method)(nil)

// New returns the wallet method.
func New(cfg Config) *Method {
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.URI == "" {
		cfg.URI = "http://" + cfg.Domain
	}
	if cfg.ChainID == 0 {
		cfg.ChainID = 1
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	return &Method{cfg: cfg, now: cfg.Clock(), log: cfg.Log(api.Wallet)}
}

// Name is api.Wallet.
func (m *Method) Name() string { return api.Wallet }

// AMR: RFC 8176 has no value for a wallet signature; "swk" (proof of
// possession of a software-secured key) is the closest, and "user" would
// be wrong (no presence is tested).
func (m *Method) AMR() []string { return []string{"swk"} }

// secret is Credential.Secret of a wallet credential: nothing secret, the
// address.
type secret struct {
	Address string `json:"address"`
}

// challenge is one message waiting for its signature. It is used once.
type challenge struct {
	mu      sync.Mutex
	used    bool
	address string // EIP-55
	credID  string // the credential it was issued for ("" when enrolling)
	message string
	expires time.Time
}

// consume marks c used, and reports whether it was still fresh.
func (c *challenge) consume(now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used {
		return errors.New("wallet: this message was already answered; start again for a fresh nonce")
	}
	c.used = true
	if !now.Before(c.expires) {
		return errors.New("wallet: the message has expired")
	}
	return nil
}

// statementChars are the characters EIP-4361's statement may hold besides
// the space: RFC 3986's reserved and unreserved ones.
const statementChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;="

// statement is the message's statement: one line (EIP-4361 forbids a
// newline), naming the scopes whose characters it allows.
func statement(purpose string, scopes []string) string {
	var ok []string
	for _, s := range scopes {
		printable := s != ""
		for _, r := range s {
			if !strings.ContainsRune(statementChars, r) {
				printable = false
			}
		}
		if printable {
			ok = append(ok, s)
		}
	}
	if len(ok) == 0 {
		return purpose + "."
	}
	return purpose + " for: " + strings.Join(ok, ", ") + "."
}

// Message builds the EIP-4361 text.
func (m *Method) message(address, stmt string, issued time.Time) (string, time.Time, error) {
	nonce, err := Nonce()
	if err != nil {
		return "", time.Time{}, err
	}
	issued = issued.UTC().Truncate(time.Second)
	exp := issued.Add(m.cfg.TTL)
	var b strings.Builder
	fmt.Fprintf(&b, "%s wants you to sign in with your Ethereum account:\n%s\n\n", m.cfg.Domain, address)
	if stmt != "" {
		fmt.Fprintf(&b, "%s\n\n", stmt)
	}
	fmt.Fprintf(&b, "URI: %s\nVersion: 1\nChain ID: %d\nNonce: %s\nIssued At: %s\nExpiration Time: %s",
		m.cfg.URI, m.cfg.ChainID, nonce, issued.Format(time.RFC3339), exp.Format(time.RFC3339))
	return b.String(), exp, nil
}

const nonceAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Nonce returns 17 alphanumerics from crypto/rand (EIP-4361 asks for at
// least 8; 17 of 62 symbols is about 101 bits).
func Nonce() (string, error) {
	const n = 17
	out := make([]byte, 0, n)
	buf := make([]byte, 32)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, c := range buf {
			// Rejection sampling keeps the symbols uniform: 248 = 4*62.
			if c < 248 && len(out) < n {
				out = append(out, nonceAlphabet[c%62])
			}
		}
	}
	return string(out), nil
}

// EnrollStart checks the address (EIP-55, see ParseAddress) and returns
// the message to sign with it: {message}.
func (m *Method) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	addr := p.Address
	if addr == "" && len(p.Raw) > 0 {
		var raw struct {
			Address string `json:"address"`
		}
		_ = json.Unmarshal(p.Raw, &raw)
		addr = raw.Address
	}
	if addr == "" {
		return nil, nil, api.Errorf(api.CodeInvalidParams, "wallet enrollment needs an address").
			WithHint("pass the 0x address to enroll (stepupctl enroll wallet --address 0x...)")
	}
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, nil, api.Errorf(api.CodeInvalidParams, "%s", err.Error())
	}
	msg, exp, err := m.message(a, "Link this address to stepup-agent", m.now())
	if err != nil {
		return nil, nil, err
	}
	st := &challenge{address: a, message: msg, expires: exp}
	label := p.Label
	if label == "" {
		label = a[:6] + "…" + a[len(a)-4:]
	}
	return &enrollState{challenge: st, label: label}, &api.WalletChallenge{Message: msg, Address: a}, nil
}

type enrollState struct {
	*challenge
	label string
}

type response struct {
	Signature string `json:"signature"`
}

// EnrollFinish checks that the signature over the enrollment message
// recovers the address, and returns the credential.
func (m *Method) EnrollFinish(ctx context.Context, state any, resp json.RawMessage) (*method.Credential, error) {
	st, ok := state.(*enrollState)
	if !ok || st == nil {
		return nil, errors.New("wallet: no enrollment in progress")
	}
	if err := m.check(st.challenge, resp); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(secret{Address: st.address})
	m.log.Info("address enrolled", zap.String("address", st.address))
	return &method.Credential{Method: api.Wallet, Label: st.label, Secret: b}, nil
}

// Start writes a message for the oldest enrolled address. (With several
// wallets enrolled, that one is asked for; remove the others to use
// another.)
func (m *Method) Start(ctx context.Context, r method.StartRequest) (any, any, error) {
	creds := slices.Clone(r.Creds)
	slices.SortStableFunc(creds, func(a, b *method.Credential) int {
		if a == nil || b == nil {
			return 0
		}
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, c := range creds {
		if c == nil || c.Method != api.Wallet {
			continue
		}
		var s secret
		if err := json.Unmarshal(c.Secret, &s); err != nil {
			continue
		}
		a, err := ParseAddress(s.Address)
		if err != nil {
			continue
		}
		msg, exp, err := m.message(a, statement("Confirm it is you to stepup-agent", r.Scopes), m.now())
		if err != nil {
			return nil, nil, err
		}
		st := &challenge{address: a, credID: c.ID, message: msg, expires: exp}
		return st, &api.WalletChallenge{Message: msg, Address: a}, nil
	}
	return nil, nil, api.Errorf(api.CodeNotEnrolled, "no wallet address is enrolled").
		WithHint("enroll one with `stepupctl enroll wallet --address 0x...`")
}

// Ask shows the message to sign; the answer is the signature.
func (m *Method) Ask(state any) method.Ask {
	a := method.Ask{Label: "Signature (0x…):", Input: api.InputText, Field: "signature",
		Hint: "Sign this message with your wallet (personal_sign):"}
	if st, ok := state.(*challenge); ok && st != nil {
		a.Text = st.message
	}
	return a
}

// Complete checks the signature against the challenge's message and
// address; the challenge is consumed whatever the outcome.
func (m *Method) Complete(ctx context.Context, state any, creds []*method.Credential, resp json.RawMessage) (*method.Credential, error) {
	st, ok := state.(*challenge)
	if !ok || st == nil {
		return nil, method.ErrVerificationFailed
	}
	var cred *method.Credential
	for _, c := range creds {
		if c != nil && c.ID == st.credID && c.Method == api.Wallet {
			cred = c
		}
	}
	if cred == nil {
		// Removed since the challenge was issued.
		_ = st.consume(m.now())
		return nil, method.ErrVerificationFailed
	}
	if err := m.check(st, resp); err != nil {
		return nil, err
	}
	return cred, nil
}

// check consumes st and verifies resp's signature over its message.
func (m *Method) check(st *challenge, resp json.RawMessage) error {
	if err := st.consume(m.now()); err != nil {
		m.log.Info("signature refused", zap.String("why", err.Error()))
		return fmt.Errorf("%w: %v", method.ErrVerificationFailed, err)
	}
	var r response
	if err := json.Unmarshal(resp, &r); err != nil || r.Signature == "" {
		return fmt.Errorf("%w: the response has no signature", method.ErrVerificationFailed)
	}
	got, err := recoverAddress(st.message, r.Signature)
	if err != nil {
		m.log.Info("signature refused", zap.String("why", err.Error()))
		return fmt.Errorf("%w: %v", method.ErrVerificationFailed, err)
	}
	if got != st.address {
		m.log.Info("signature refused", zap.String("why", "signed by another address"))
		return fmt.Errorf("%w: the message was signed by another address", method.ErrVerificationFailed)
	}
	return nil
}

// SingleShot: a sign-in message and its nonce are used up by the first
// answer, so the agent makes a new one before it asks again.
func (m *Method) SingleShot() bool { return true }

var _ method.SingleShot = (*Method)(nil)
