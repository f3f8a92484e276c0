package service

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// Priority is a syslog priority, as journald's PRIORITY= field takes it.
type Priority int

// Priorities used by JournalCore (syslog(3)).
const (
	PriCrit    Priority = 2
	PriErr     Priority = 3
	PriWarning Priority = 4
	PriInfo    Priority = 6
	PriDebug   Priority = 7
)

// priority maps a zap level onto a syslog priority.
func priority(l zapcore.Level) Priority {
	switch {
	case l <= zapcore.DebugLevel:
		return PriDebug
	case l == zapcore.InfoLevel:
		return PriInfo
	case l == zapcore.WarnLevel:
		return PriWarning
	case l == zapcore.ErrorLevel:
		return PriErr
	default: // DPanic, Panic, Fatal
		return PriCrit
	}
}

// SendFunc sends one journal entry: the message, its priority and the
// other fields (names already valid journal field names).
type SendFunc func(message string, p Priority, fields map[string]string) error

// JournalCore is a zapcore.Core that writes entries to journald with
// sd_journal_send's native protocol (go-systemd's journal package): the
// message as MESSAGE=, the level as PRIORITY=, the caller as CODE_FILE=,
// CODE_LINE=, CODE_FUNC=, the logger's name as LOGGER= and each zap field
// as a field of its own, its key upper-cased and sanitized (peerUid becomes
// PEER_UID), so `journalctl --user -u stepup-agent PEER_UID=1001` works.
// When the journal cannot be written, the entry goes to the fallback core.
type JournalCore struct {
	zapcore.LevelEnabler
	send     SendFunc
	fallback zapcore.Core
	ident    string
	fields   map[string]string
}

// NewJournalCore returns a core that writes to the local journal, and to
// fallback when that fails (nil: drop).
func NewJournalCore(level zapcore.LevelEnabler, fallback zapcore.Core) *JournalCore {
	return NewJournalCoreWith(level, journalSend, fallback)
}

// NewJournalCoreWith is NewJournalCore with another sender (for tests).
func NewJournalCoreWith(level zapcore.LevelEnabler, send SendFunc, fallback zapcore.Core) *JournalCore {
	if fallback == nil {
		fallback = zapcore.NewNopCore()
	}
	return &JournalCore{LevelEnabler: level, send: send, fallback: fallback, ident: filepath.Base(os.Args[0]), fields: map[string]string{}}
}

// With adds fields to every entry of the returned core.
func (c *JournalCore) With(fields []zapcore.Field) zapcore.Core {
	n := &JournalCore{LevelEnabler: c.LevelEnabler, send: c.send, fallback: c.fallback.With(fields), ident: c.ident, fields: make(map[string]string, len(c.fields)+len(fields))}
	for k, v := range c.fields {
		n.fields[k] = v
	}
	addFields(n.fields, fields)
	return n
}

// Check adds c to ce when the level is enabled.
func (c *JournalCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write sends one entry.
func (c *JournalCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	vars := make(map[string]string, len(c.fields)+len(fields)+6)
	for k, v := range c.fields {
		vars[k] = v
	}
	addFields(vars, fields)
	if c.ident != "" {
		vars["SYSLOG_IDENTIFIER"] = c.ident
	}
	if e.LoggerName != "" {
		vars["LOGGER"] = e.LoggerName
	}
	if e.Caller.Defined {
		vars["CODE_FILE"] = e.Caller.File
		vars["CODE_LINE"] = strconv.Itoa(e.Caller.Line)
		if e.Caller.Function != "" {
			vars["CODE_FUNC"] = e.Caller.Function
		}
	}
	if e.Stack != "" {
		vars["STACKTRACE"] = e.Stack
	}
	if err := c.send(e.Message, priority(e.Level), vars); err != nil {
		// The journal went away: keep the entry on stderr rather than lose it.
		return c.fallback.Write(e, fields)
	}
	return nil
}

// Sync has nothing to flush: each entry is one datagram.
func (c *JournalCore) Sync() error { return c.fallback.Sync() }

// addFields encodes zap fields into journal fields.
func addFields(dst map[string]string, fields []zapcore.Field) {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	for k, v := range enc.Fields {
		dst[FieldName(k)] = fieldValue(v)
	}
}

func fieldValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return v.String()
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, uintptr, float32, float64, complex64, complex128:
		return fmt.Sprint(v)
	}
	if b, err := json.Marshal(v); err == nil {
		return string(b)
	}
	return fmt.Sprint(v)
}

// reserved are journal fields the core sets itself or that journald gives
// a meaning; a zap field of that name is renamed F_NAME rather than let a
// caller forge them.
var reserved = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "CODE_FILE": true,
	"CODE_LINE": true, "CODE_FUNC": true, "ERRNO": true, "SYSLOG_IDENTIFIER": true,
	"SYSLOG_FACILITY": true, "SYSLOG_PID": true, "SYSLOG_TIMESTAMP": true,
	"SYSLOG_RAW": true, "INVOCATION_ID": true, "USER_INVOCATION_ID": true,
	"UNIT": true, "USER_UNIT": true, "OBJECT_PID": true, "DOCUMENTATION": true,
	"TID": true, "LOGGER": true, "STACKTRACE": true,
}

// FieldName turns a zap key into a valid journal field name: upper-case
// letters, digits and underscores, not starting with an underscore or a
// digit, at most 64 bytes; camelCase words are split with underscores.
func FieldName(key string) string {
	var b strings.Builder
	prevLowerOrDigit := false
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
			prevLowerOrDigit = true
		case r >= 'A' && r <= 'Z':
			if prevLowerOrDigit {
				b.WriteByte('_')
			}
			b.WriteRune(r)
			prevLowerOrDigit = false
		case r >= '0' && r <= '9':
			b.WriteRune(r)
			prevLowerOrDigit = true
		default:
			b.WriteByte('_')
			prevLowerOrDigit = false
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" {
		s = "FIELD"
	}
	if s[0] >= '0' && s[0] <= '9' || reserved[s] || strings.HasPrefix(s, "COREDUMP") {
		s = "F_" + s
	}
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}
