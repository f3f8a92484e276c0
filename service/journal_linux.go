package service

import "github.com/coreos/go-systemd/v22/journal"

func journalSend(msg string, p Priority, fields map[string]string) error {
	return journal.Send(msg, journal.Priority(p), fields)
}

// journalStderr reports whether the journal's socket is there and stderr
// is one of its streams (JOURNAL_STREAM matches stderr's device and inode):
// the service manager started us with StandardError=journal.
func journalStderr() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok && journal.Enabled()
}
