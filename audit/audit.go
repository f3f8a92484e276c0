// Package audit writes the agent's audit log: one JSON object per line,
// appended, for every step-up, verification, consume, reset, enrollment and
// lock. Records say who (pid, uid, executable), what and the result; they
// never carry a token, code, secret or password.
package audit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Record is one line of the audit log.
type Record struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"` // stepup, verify, consume, reset, enroll, remove, lock, unlock, ...
	PID     int       `json:"pid,omitempty"`
	UID     int       `json:"uid"`
	Exe     string    `json:"exe,omitempty"`
	Method  string    `json:"method,omitempty"`
	Scopes  []string  `json:"scopes,omitempty"`
	JTI     string    `json:"jti,omitempty"` // token ID, never the token
	Result  string    `json:"result"`        // ok, or the error reason
	Detail  string    `json:"detail,omitempty"`
	Revoked int       `json:"revoked,omitempty"`
}

// Log appends records to a file. A nil *Log discards them.
type Log struct {
	mu sync.Mutex
	f  *os.File
}

// Open opens (creating with 0600, and its directory with 0700) the log at path.
func Open(path string) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &Log{f: f}, nil
}

// Write appends r, stamping its time.
func (l *Log) Write(r Record) error {
	if l == nil {
		return nil
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err = l.f.Write(b)
	return err
}

// Close closes the file.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}

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
