package api

import "encoding/json"

// The per-method payloads of enrollStart's result and of a challenge
// (docs/protocol.md, enrollStart and startVerification; each method's
// section of docs/methods.md). A method's EnrollStart returns one of
// the *Enrollment types; the agent puts it into EnrollStartResult next to
// enrollmentId. A method's Start returns one of the *Challenge types (or
// an empty object), sent as Challenge.Challenge.

// TOTPEnrollment is totp's enrollStart payload: the secret to add to an
// authenticator app.
type TOTPEnrollment struct {
	Secret     string `json:"secret"`
	OtpauthURI string `json:"otpauthUri"`
}

// OTPChallenge is email_otp's and sms_otp's enrollStart payload and
// challenge: where the code was sent, masked.
type OTPChallenge struct {
	Destination string `json:"destination"`
}

// WalletChallenge is wallet's enrollStart payload and challenge: the
// sign-in message to sign with personal_sign, and the address it is for.
type WalletChallenge struct {
	Message string `json:"message"`
	Address string `json:"address"`
}

// PasskeyCeremony is passkey's enrollStart payload and challenge: the
// agent's page for the ceremony, and the WebAuthn options for a client
// that runs the ceremony itself.
type PasskeyCeremony struct {
	URL       string          `json:"url"`
	PublicKey json.RawMessage `json:"publicKey"`
}

// RecoveryEnrollment is recovery_code's enrollStart payload: the new
// codes, shown once.
type RecoveryEnrollment struct {
	RecoveryCodes []string `json:"recoveryCodes"`
}

// FingerprintEnrollment is fingerprint's enrollStart payload: the
// fingers fprintd has enrolled for the user (fprintd's names, e.g.
// "right-index-finger"), which enrollFinish with {} registers. Its
// challenge is {}: the agent runs fprintd's verification itself.
type FingerprintEnrollment struct {
	Fingers []string `json:"fingers"`
}

// EnrollPayload is what a method's EnrollStart returns: one of the types
// above.
type EnrollPayload interface {
	fill(r *EnrollStartResult)
}

func (p *TOTPEnrollment) fill(r *EnrollStartResult)     { r.TOTPEnrollment = p }
func (p *OTPChallenge) fill(r *EnrollStartResult)       { r.OTPChallenge = p }
func (p *WalletChallenge) fill(r *EnrollStartResult)    { r.WalletChallenge = p }
func (p *PasskeyCeremony) fill(r *EnrollStartResult)    { r.PasskeyCeremony = p }
func (p *RecoveryEnrollment) fill(r *EnrollStartResult) { r.RecoveryEnrollment = p }
func (p *FingerprintEnrollment) fill(r *EnrollStartResult) {
	r.FingerprintEnrollment = p
}

// EnrollStartResult is the result of enrollStart: the enrollment's id and
// method, and the method's payload, its members inline.
type EnrollStartResult struct {
	EnrollmentID string `json:"enrollmentId"`
	Method       string `json:"method"`
	*TOTPEnrollment
	*OTPChallenge
	*WalletChallenge
	*PasskeyCeremony
	*RecoveryEnrollment
	*FingerprintEnrollment
}

// NewEnrollStartResult puts a method's payload (nil: none) into the result.
func NewEnrollStartResult(id, method string, p EnrollPayload) *EnrollStartResult {
	r := &EnrollStartResult{EnrollmentID: id, Method: method}
	if p != nil {
		p.fill(r)
	}
	return r
}
