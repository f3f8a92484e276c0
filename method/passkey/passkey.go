// Package passkey implements the passkey MFA method: a WebAuthn ceremony
// in the user's browser, verified with github.com/go-webauthn/webauthn.
//
// The agent serves a one-time page on loopback (127.0.0.1, and ::1 on the
// same port so that no other process can take the address "localhost"
// resolves to first), at an unguessable path, for each enrollment or
// verification. The relying party ID is "localhost" and the page is opened
// at http://localhost:PORT/c/TOKEN, a secure context for browsers. The page
// runs navigator.credentials.create or .get with the options the agent
// made, posts the result back, and shows whether it was accepted. It is
// served once (a second load gets 410 Gone), under a strict Content
// Security Policy with no external resources, and the server only answers
// requests whose Host is localhost:PORT (no DNS rebinding).
//
// The page's address is a secret (whoever loads it first holds the
// ceremony), so it never goes on a command line, where every local user
// can read it: the browser is opened on a private launcher file that
// redirects to it (open.go), and the prompt names that file. The first
// load sets a cookie (HttpOnly, SameSite=Strict) that the page's POST must
// carry, so only the browser that loaded the page can answer; on Linux
// the server also answers only connections from the agent's own user (the
// kernel's socket table says who owns the other end). A refused request
// never reaches the check and never counts as a failed verification.
//
// A custom UI may instead run the ceremony itself with the publicKey
// options of enrollStart / startVerification (from any http(s)://localhost
// origin, since the RP ID is localhost) and send the WebAuthn JSON as
// {credential}. A response of {} means "done in the agent's page" and
// waits for the page's result.
//
// Credentials are discoverable (residentKey required) and user
// verification is required at enrollment and at every assertion. Sign
// counters are checked: an assertion whose counter does not increase
// (when either counter is non-zero) raises the library's clone warning and
// is refused, and the stored counter is not advanced.
//
// docs/methods.md documents the method for users.
package passkey

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os/user"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"go.uber.org/zap"
)

// RPID is the relying party ID of every passkey the agent enrolls.
const RPID = "localhost"

// RPName is the relying party name browsers show.
const RPName = "stepup-agent"

// Defaults of the options.
const (
	DefaultCeremonyTimeout = 5 * time.Minute
	DefaultIdleTimeout     = 30 * time.Second
	// MaxBody bounds a request body the page posts.
	MaxBody = 64 << 10
)

// Opener opens a launcher file in the user's browser: path is a private
// local HTML file that sends the browser on to the page (never the page's
// address itself, which must not appear on a command line). It should
// return once the browser has been asked to open it.
type Opener func(ctx context.Context, path string) error

// Config configures the passkey method.
type Config struct {
	method.Deps
	// Opener replaces the browser opener (xdg-open on Linux, open on
	// macOS). Tests drive a headless browser with it.
	Opener Opener
	// CeremonyTimeout is how long a ceremony's page and options stay
	// valid (DefaultCeremonyTimeout when zero).
	CeremonyTimeout time.Duration
	// IdleTimeout is how long the page server lingers after its last
	// ceremony ended (DefaultIdleTimeout when zero).
	IdleTimeout time.Duration
}

// Method is the passkey method. One Method owns one loopback page server,
// started when a ceremony needs it and stopped when idle.
type Method struct {
	log             *zap.Logger
	open            Opener
	ceremonyTimeout time.Duration
	idleTimeout     time.Duration

	srv server
}

// New returns the passkey method.
func New(cfg Config) *Method {
	m := &Method{
		log:             cfg.Log("").With(zap.String("method", api.Passkey)),
		open:            cfg.Opener,
		ceremonyTimeout: cmp.Or(cfg.CeremonyTimeout, DefaultCeremonyTimeout),
		idleTimeout:     cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout),
	}
	if m.open == nil {
		m.open = defaultOpener
	}
	m.srv.m = m
	return m
}

// Close stops the page server and abandons every ceremony.
func (m *Method) Close() error { return m.srv.close() }

// Secret is Credential.Secret of a passkey.
type Secret struct {
	Credential webauthn.Credential `json:"credential"`
	UserHandle []byte              `json:"userHandle"`
	RPID       string              `json:"rpId"`
}

// Name implements method.Method.
func (m *Method) Name() string { return api.Passkey }

// AMR implements method.Method: a hardware-bound key (or platform
// authenticator) with user verification, which is multi-factor by itself.
func (m *Method) AMR() []string { return []string{"hwk", "user", "mfa"} }

// Ask implements method.Method: nothing is typed; the browser page is
// where the user answers (InputNone: the prompt only offers Cancel).
func (m *Method) Ask(state any) method.Ask {
	a := method.Ask{Label: "Passkey", Input: api.InputNone}
	c, ok := state.(*ceremony)
	if !ok {
		return a
	}
	verb := "Confirm with your passkey"
	if c.kind == kindCreate {
		verb = "Create your passkey"
	}
	if c.customUI {
		// The client shows the page itself (the agent opens nothing):
		// its address goes to the client only, as in the challenge.
		a.Hint = "Open this page in your browser and " + lowerFirst(verb) + ":"
		a.Text = c.url
		return a
	}
	// Never the page's address: a prompt's text may be a command
	// line (zenity --text), readable by every local user.
	a.Hint = verb + " in the browser page that opened."
	if p, err := c.launcherPath(); err == nil {
		a.Hint += " If none did, open file://" + p + " in your browser."
	}
	return a
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// user is the webauthn.User the ceremonies run for.
type wUser struct {
	id    []byte
	name  string
	creds []webauthn.Credential
}

func (u *wUser) WebAuthnID() []byte                         { return u.id }
func (u *wUser) WebAuthnName() string                       { return u.name }
func (u *wUser) WebAuthnDisplayName() string                { return u.name }
func (u *wUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

func localUserName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "stepup"
}

// rp returns a relying party that accepts origins.
func rp(origins ...string) (*webauthn.WebAuthn, error) {
	return webauthn.New(&webauthn.Config{
		RPID:                  RPID,
		RPDisplayName:         RPName,
		RPOrigins:             origins,
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   protocol.VerificationRequired,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: DefaultCeremonyTimeout, TimeoutUVD: DefaultCeremonyTimeout},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: DefaultCeremonyTimeout, TimeoutUVD: DefaultCeremonyTimeout},
		},
	})
}

// EnrollStart implements method.Method: the result is {url, publicKey}.
func (m *Method) EnrollStart(ctx context.Context, p method.EnrollParams) (any, api.EnrollPayload, error) {
	c, err := m.srv.newCeremony(kindCreate)
	if err != nil {
		return nil, nil, err
	}
	handle := make([]byte, 32)
	if _, err := rand.Read(handle); err != nil {
		m.srv.end(c)
		return nil, nil, err
	}
	w, err := rp(c.origin)
	if err != nil {
		m.srv.end(c)
		return nil, nil, err
	}
	u := &wUser{id: handle, name: localUserName()}
	creation, session, err := w.BeginRegistration(u,
		webauthn.WithExtensions(webauthn.WithExtensionCredProps()),
		webauthn.WithCredentialParameters(webauthn.CredentialParametersRecommendedL3()))
	if err != nil {
		m.srv.end(c)
		return nil, nil, fmt.Errorf("passkey: %w", err)
	}
	opts, err := json.Marshal(creation.Response)
	if err != nil {
		m.srv.end(c)
		return nil, nil, err
	}
	label := strings.TrimSpace(p.Label)
	if label == "" {
		label = "passkey"
	}
	c.setup(opts, *session, u, label)
	m.log.Info("passkey enrollment started", zap.String("origin", c.origin))
	return c, &api.PasskeyCeremony{URL: c.url, PublicKey: json.RawMessage(opts)}, nil
}

// EnrollFinish implements method.Method. response is {} (wait for the
// agent's page) or {credential}.
func (m *Method) EnrollFinish(ctx context.Context, state any, response json.RawMessage) (*method.Credential, error) {
	c, ok := state.(*ceremony)
	if !ok || c.kind != kindCreate {
		return nil, errors.New("passkey: enrollment state of another method")
	}
	body, origin, err := m.answer(ctx, c, response)
	if err != nil {
		return nil, err
	}
	defer m.srv.end(c)
	cred, err := m.finishCreate(c, body, origin)
	c.report(err)
	if err != nil {
		m.log.Info("passkey enrollment refused", zap.String("reason", reason(err)))
		return nil, method.ErrVerificationFailed
	}
	raw, err := json.Marshal(Secret{Credential: *cred, UserHandle: c.user.id, RPID: RPID})
	if err != nil {
		return nil, err
	}
	m.log.Info("passkey enrolled", zap.String("aaguid", fmt.Sprintf("%x", cred.Authenticator.AAGUID)))
	return &method.Credential{Method: api.Passkey, Label: c.label, Secret: raw}, nil
}

func (m *Method) finishCreate(c *ceremony, body []byte, origin string) (*webauthn.Credential, error) {
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		return nil, err
	}
	if err := checkOrigin(parsed.Response.CollectedClientData.Origin, origin); err != nil {
		return nil, err
	}
	w, err := rp(parsed.Response.CollectedClientData.Origin)
	if err != nil {
		return nil, err
	}
	cred, err := w.CreateCredential(c.user, c.session, parsed)
	if err != nil {
		return nil, err
	}
	if !cred.Flags.UserVerified {
		return nil, errors.New("the authenticator did not verify the user")
	}
	if rk := cred.Extensions.RK; rk != nil && !*rk {
		return nil, errors.New("the authenticator made a non-discoverable credential")
	}
	return cred, nil
}

// Start implements method.Method: the challenge is {url, publicKey} for
// an assertion by any of the user's passkeys.
func (m *Method) Start(ctx context.Context, r method.StartRequest) (any, any, error) {
	var descs []protocol.CredentialDescriptor
	for _, mc := range r.Creds {
		s, err := decodeSecret(mc)
		if err != nil {
			m.log.Warn("unreadable passkey credential", zap.String("credential", mc.ID))
			continue
		}
		descs = append(descs, s.Credential.Descriptor())
	}
	if len(descs) == 0 {
		return nil, nil, api.Errorf(api.CodeNotEnrolled, "passkey: no passkey enrolled").
			WithHint("enroll one with `stepupctl enroll passkey`")
	}
	c, err := m.srv.newCeremony(kindGet)
	if err != nil {
		return nil, nil, err
	}
	w, err := rp(c.origin)
	if err != nil {
		m.srv.end(c)
		return nil, nil, err
	}
	assertion, session, err := w.BeginDiscoverableLogin(
		webauthn.WithAllowedCredentials(descs),
		webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		m.srv.end(c)
		return nil, nil, fmt.Errorf("passkey: %w", err)
	}
	opts, err := json.Marshal(assertion.Response)
	if err != nil {
		m.srv.end(c)
		return nil, nil, err
	}
	c.setup(opts, *session, nil, "")
	c.customUI = r.CustomUI
	m.log.Info("passkey verification started", zap.String("origin", c.origin), zap.Int("credentials", len(descs)))
	return c, &api.PasskeyCeremony{URL: c.url, PublicKey: json.RawMessage(opts)}, nil
}

// Wait implements method.Waiter: it blocks until the page has posted the
// ceremony's result (or ctx ends). The response it returns is {}: the
// result is kept with the ceremony.
//
// It opens the page in the browser only for the agent's own prompt,
// which hands it the requester's environment (method.WithPromptEnv): on
// the custom-UI path (completeVerification {}) the client shows the page
// or runs the ceremony itself, and a second browser tab on a page already
// used would only confuse the user.
func (m *Method) Wait(ctx context.Context, state any) (json.RawMessage, error) {
	c, ok := state.(*ceremony)
	if !ok {
		return nil, errors.New("passkey: state of another method")
	}
	if _, prompting := method.PromptEnvFrom(ctx); prompting {
		c.openOnce.Do(func() { m.openPage(ctx, c) })
	}
	if _, _, err := c.wait(ctx); err != nil {
		return nil, err
	}
	return json.RawMessage(`{}`), nil
}

// openPage opens c's launcher in the browser.
func (m *Method) openPage(ctx context.Context, c *ceremony) {
	p, err := c.launcherPath()
	if err != nil {
		m.log.Warn("could not write the passkey page's launcher", zap.Error(err))
		return
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.open(octx, p); err != nil {
		// The prompt's description names the launcher for the user.
		m.log.Warn("could not open a browser; the prompt names the page's launcher file", zap.Error(err))
	}
}

// Complete implements method.Method. response is {} (wait for the agent's
// page) or {credential}.
func (m *Method) Complete(ctx context.Context, state any, creds []*method.Credential, response json.RawMessage) (*method.Credential, error) {
	c, ok := state.(*ceremony)
	if !ok || c.kind != kindGet {
		return nil, errors.New("passkey: verification state of another method")
	}
	body, origin, err := m.answer(ctx, c, response)
	if err != nil {
		return nil, err
	}
	defer m.srv.end(c)
	mc, err := m.finishGet(c, body, origin, creds)
	c.report(err)
	if err != nil {
		m.log.Info("passkey assertion refused", zap.String("reason", reason(err)))
		return nil, method.ErrVerificationFailed
	}
	return mc, nil
}

func (m *Method) finishGet(c *ceremony, body []byte, origin string, creds []*method.Credential) (*method.Credential, error) {
	parsed, err := protocol.ParseCredentialRequestResponseBytes(body)
	if err != nil {
		return nil, err
	}
	if err := checkOrigin(parsed.Response.CollectedClientData.Origin, origin); err != nil {
		return nil, err
	}
	var all []webauthn.Credential
	secrets := map[*method.Credential]*Secret{}
	var match *method.Credential
	for _, mc := range creds {
		s, err := decodeSecret(mc)
		if err != nil {
			continue
		}
		secrets[mc] = s
		all = append(all, s.Credential)
		if bytes.Equal(s.Credential.ID, parsed.RawID) {
			match = mc
		}
	}
	if match == nil {
		return nil, errors.New("unknown credential")
	}
	ms := secrets[match]
	if ms.Credential.Authenticator.CloneWarning {
		return nil, errors.New("credential flagged as cloned")
	}
	w, err := rp(parsed.Response.CollectedClientData.Origin)
	if err != nil {
		return nil, err
	}
	handler := func(rawID, userHandle []byte) (webauthn.User, error) {
		return &wUser{id: ms.UserHandle, name: localUserName(), creds: all}, nil
	}
	_, got, err := w.ValidatePasskeyLogin(handler, c.session, parsed)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(got.ID, ms.Credential.ID) {
		return nil, errors.New("credential mismatch")
	}
	if got.Authenticator.CloneWarning {
		return nil, fmt.Errorf("sign counter did not increase (stored %d, got %d): possible cloned authenticator",
			ms.Credential.Authenticator.SignCount, parsed.Response.AuthenticatorData.Counter)
	}
	ns := *ms
	ns.Credential = *got
	raw, err := json.Marshal(ns)
	if err != nil {
		return nil, err
	}
	out := *match
	out.Secret = raw
	return &out, nil
}

func decodeSecret(mc *method.Credential) (*Secret, error) {
	if mc == nil || mc.Method != api.Passkey {
		return nil, errors.New("not a passkey")
	}
	var s Secret
	if err := json.Unmarshal(mc.Secret, &s); err != nil {
		return nil, err
	}
	if len(s.Credential.ID) == 0 || len(s.Credential.PublicKey) == 0 || len(s.UserHandle) == 0 {
		return nil, errors.New("incomplete passkey secret")
	}
	return &s, nil
}

// answerMsg is the response of enrollFinish / completeVerification.
type answerMsg struct {
	Credential json.RawMessage `json:"credential"`
}

// answer returns the WebAuthn JSON to check and the origin it must come
// from: the page's post for {}, or the custom UI's {credential}. It marks
// the ceremony used: a ceremony is checked once.
func (m *Method) answer(ctx context.Context, c *ceremony, response json.RawMessage) ([]byte, string, error) {
	var a answerMsg
	if len(bytes.TrimSpace(response)) > 0 {
		if err := json.Unmarshal(response, &a); err != nil {
			return nil, "", api.Errorf(api.CodeInvalidParams, "passkey: the response must be {} or {credential}")
		}
	}
	if len(a.Credential) == 0 || string(a.Credential) == "null" {
		body, _, err := c.wait(ctx)
		if err != nil {
			return nil, "", err
		}
		if !c.use() {
			return nil, "", method.ErrVerificationFailed
		}
		return body, c.origin, nil
	}
	if len(a.Credential) > MaxBody {
		return nil, "", method.ErrVerificationFailed
	}
	if !c.use() {
		return nil, "", method.ErrVerificationFailed
	}
	return a.Credential, "", nil
}

// checkOrigin accepts the page's exact origin for a page post (want set)
// and any http(s)://localhost[:port] origin for a custom UI.
func checkOrigin(got, want string) error {
	if want != "" {
		if got != want {
			return errors.New("origin mismatch")
		}
		return nil
	}
	u, err := url.Parse(got)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() != RPID || u.Path != "" || u.User != nil {
		return errors.New("origin not on localhost")
	}
	return nil
}

// reason turns a verification error into a log-safe reason: the
// library's error kind and details, which never carry signatures or keys.
func reason(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		if pe.Details != "" {
			return pe.Type + ": " + pe.Details
		}
		return pe.Type
	}
	return err.Error()
}

var _ method.Method = (*Method)(nil)
var _ method.Waiter = (*Method)(nil)
