package service

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

type sent struct {
	msg    string
	pri    Priority
	fields map[string]string
}

func TestJournalCoreFields(t *testing.T) {
	var got []sent
	send := func(msg string, p Priority, f map[string]string) error {
		got = append(got, sent{msg, p, f})
		return nil
	}
	log := zap.New(NewJournalCoreWith(zapcore.DebugLevel, send, nil), zap.AddCaller()).Named("agent").With(zap.String("socket", "/run/user/1000/stepup/agent.sock"))
	log.Warn("refusing connection from another user", zap.Int("peerUid", 1001), zap.Duration("delay", 2*time.Second),
		zap.Error(errors.New("boom")), zap.String("message", "forged"), zap.String("_SYSTEMD_UNIT", "forged"), zap.Strings("scopes", []string{"a", "b"}), zap.Bool("x-y.z", true))
	log.Debug("d")
	log.Info("i")
	log.Error("e")
	if len(got) != 4 {
		t.Fatalf("sent %d entries, want 4", len(got))
	}
	e := got[0]
	if e.msg != "refusing connection from another user" || e.pri != PriWarning {
		t.Errorf("message/priority = %q/%d", e.msg, e.pri)
	}
	want := map[string]string{
		"SOCKET":            "/run/user/1000/stepup/agent.sock",
		"PEER_UID":          "1001",
		"DELAY":             "2s",
		"ERROR":             "boom",
		"F_MESSAGE":         "forged",
		"SYSTEMD_UNIT":      "forged",
		"SCOPES":            `["a","b"]`,
		"X_Y_Z":             "true",
		"LOGGER":            "agent",
		"CODE_FUNC":         "github.com/stepup-agent/stepup-agent/service.TestJournalCoreFields",
		"SYSLOG_IDENTIFIER": e.fields["SYSLOG_IDENTIFIER"],
	}
	for k, v := range want {
		if e.fields[k] != v {
			t.Errorf("field %s = %q; want %q (all: %v)", k, e.fields[k], v, e.fields)
		}
	}
	if !strings.HasSuffix(e.fields["CODE_FILE"], "journal_test.go") || e.fields["CODE_LINE"] == "" {
		t.Errorf("CODE_FILE/LINE = %q/%q", e.fields["CODE_FILE"], e.fields["CODE_LINE"])
	}
	if _, ok := e.fields["MESSAGE"]; ok {
		t.Error("a zap field overrode MESSAGE")
	}
	for i, p := range []Priority{PriDebug, PriInfo, PriErr} {
		if got[i+1].pri != p {
			t.Errorf("entry %d priority %d; want %d", i+1, got[i+1].pri, p)
		}
	}
}

func TestJournalCoreFallsBackToStderr(t *testing.T) {
	fb, logs := observer.New(zapcore.InfoLevel)
	send := func(string, Priority, map[string]string) error { return errors.New("journal gone") }
	log := zap.New(NewJournalCoreWith(zapcore.InfoLevel, send, fb)).With(zap.String("k", "v"))
	log.Info("kept")
	if logs.Len() != 1 || logs.All()[0].Message != "kept" || logs.All()[0].ContextMap()["k"] != "v" {
		t.Fatalf("fallback got %v", logs.All())
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"peerUid":               "PEER_UID",
		"fdName":                "FD_NAME",
		"socket":                "SOCKET",
		"_private":              "PRIVATE",
		"9lives":                "F_9LIVES",
		"priority":              "F_PRIORITY",
		"":                      "FIELD",
		"é":                     "FIELD",
		"a.b-c d":               "A_B_C_D",
		strings.Repeat("a", 80): strings.Repeat("A", 64),
	} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q; want %q", in, got, want)
		}
	}
}

// Without JOURNAL_STREAM naming stderr the logger writes to stderr, even
// when the journal's socket exists.
func TestNewLoggerStderrOutsideTheJournal(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "1:1")
	if journalStderr() {
		t.Fatal("journalStderr() with a JOURNAL_STREAM that is not stderr")
	}
	t.Setenv("JOURNAL_STREAM", "")
	log, err := NewLogger(zapcore.InfoLevel)
	if err != nil || log == nil {
		t.Fatalf("NewLogger: %v", err)
	}
	if _, ok := log.Core().(*JournalCore); ok {
		t.Fatal("NewLogger chose the journal without JOURNAL_STREAM")
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a\nb\tc\r"); got != "a b c" {
		t.Errorf("oneLine = %q", got)
	}
	long := "a" + strings.Repeat("é", 150)
	if got := oneLine(long); len(got) > 200 || !strings.HasPrefix(long, got) {
		t.Errorf("oneLine cut a rune: %q", got)
	}
}
