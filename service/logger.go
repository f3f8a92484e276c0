package service

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger returns the agent's logger at level. It writes to journald,
// with each zap field as a journal field (see JournalCore), when the
// journal's socket is there and stderr is connected to the journal (the
// service manager started the agent: JOURNAL_STREAM names stderr);
// otherwise it writes lines to stderr, as a terminal user expects.
func NewLogger(level zapcore.Level) (*zap.Logger, error) {
	stderr := StderrCore(level)
	if journalStderr() {
		return zap.New(NewJournalCore(level, stderr), zap.AddCaller()), nil
	}
	return zap.New(stderr), nil
}

// StderrCore is the console core NewLogger uses without the journal.
func StderrCore(level zapcore.LevelEnabler) zapcore.Core {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(os.Stderr), level)
}
