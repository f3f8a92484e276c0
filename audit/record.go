// Package audit writes and checks the agent's audit log: JSON Lines,
// appended, one record per event, chained so that a changed, removed,
// reordered or cut record shows (docs/audit.md).
//
// Every record carries seq (1, 2, 3, ... across rotation and restarts)
// and prev, the lowercase hex SHA-256 of the previous record's line
// without its newline (64 zeros before the first). Checkpoint records
// carry a compact JWS, signed with the agent's token-signing key, over
// {seq, prev}. The last seq and its hash (the head) are kept in the
// keychain and moved only after the record is on disk, so a log that
// ends before the head, or does not chain from it, is known to have been
// tampered with, while a crash only ever leaves records after the head.
//
// Records say who (pid, uid, executable), what and the result; they
// never carry a token, code, secret or password.
package audit

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Record is one line of the audit log. Seq and Prev are set by Write.
type Record struct {
	Seq     int64     `json:"seq"`
	Prev    string    `json:"prev"`
	Time    time.Time `json:"time"`
	Event   string    `json:"event"`
	PID     int       `json:"pid,omitempty"`
	UID     int       `json:"uid"`
	Exe     string    `json:"exe,omitempty"`
	Method  string    `json:"method,omitempty"`
	Scopes  []string  `json:"scopes,omitempty"`
	JTI     string    `json:"jti,omitempty"`    // token ID, never the token
	Result  string    `json:"result,omitempty"` // ok, or the error reason
	Detail  string    `json:"detail,omitempty"`
	Revoked int       `json:"revoked,omitempty"`
	// Caller names the caller as the binding identifies it (executable or
	// script, login session, remote connection), when the agent knows it.
	Caller string `json:"caller,omitempty"`
	// Remote names the SSH connection a remote caller came through.
	Remote string `json:"remote,omitempty"`
	// RetryAfter is a lockout's length in seconds.
	RetryAfter int `json:"retryAfterSeconds,omitempty"`
	// JWS is a checkpoint's signature over {"seq", "prev"}.
	JWS string `json:"jws,omitempty"`
	// File names the file a chain_break set aside; Head is the head it
	// expected ("seq:hash").
	File string `json:"file,omitempty"`
	Head string `json:"head,omitempty"`
}

// Event names. Other workers' events (binding refusal, remote request)
// use the names below with the record shape docs/audit.md gives.
const (
	EventStepUp       = "stepup"          // a token was minted: method, scopes, jti
	EventVerification = "verification"    // a verification: method, scopes, result ok or the reason
	EventPrompt       = "prompt"          // a prompt ended without a token: result cancelled, timeout, ...
	EventRefused      = "prompt_refused"  // no prompt shown: result rate_limited (cooldown), locked, no_prompter
	EventLockout      = "lockout"         // a method locked out after failures: method, retryAfterSeconds
	EventLockoutEnd   = "lockout_end"     // a lockout ended: method
	EventVerify       = "verify"          // verifyToken: scopes, jti, result
	EventConsume      = "consume"         // a single-use token consumed: scopes, jti
	EventReset        = "reset"           // resetState: scopes, revoked
	EventEnroll       = "enroll"          // a credential enrolled (detail: credential id) or failed
	EventRemove       = "remove"          // a credential removed (detail: credential id)
	EventLock         = "lock"            // detail: reason (manual, screen lock, sleep)
	EventUnlock       = "unlock"          // detail: reason
	EventPolicyLoad   = "policy_load"     // a policy (re)loaded: detail path; result ok or invalid (detail: the error)
	EventBindRefusal  = "binding_refusal" // getToken 4007 for a caller outside the binding: scopes, caller, result token_invalid
	EventRemote       = "remote_request"  // a request through the remote socket: detail method, remote, caller, result
	EventCheckpoint   = "checkpoint"      // jws over {seq, prev}
	EventChainBreak   = "chain_break"     // the log did not reach or chain from the head at start
	EventStart        = "start"           // the agent started: detail version
)

// DefaultPath is $XDG_STATE_HOME/stepup/audit.jsonl (~/.local/state when unset).
func DefaultPath() string { return filepath.Join(StateDir(), "audit.jsonl") }

// StateDir is $XDG_STATE_HOME/stepup, or ~/.local/state/stepup.
func StateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "stepup")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "stepup")
}

// Head is the last record of the log: its seq and the hex SHA-256 of its
// line. It is what auditHead answers and what a receipt keeps.
type Head struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// Zero is prev of the very first record.
var Zero = strings.Repeat("0", 64)
