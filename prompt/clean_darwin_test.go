package prompt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
)

// TestOsascriptShowsCleanText: every text the osascript driver passes to
// its dialog (title, text, button labels) is clean. The recorder stands
// for osascript: what is checked is what the driver hands it.
func TestOsascriptShowsCleanText(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "record")
	prog := filepath.Join(dir, "osascript")
	script := "#!/bin/sh\nprintf '%s\\0' \"$@\" >> " + rec + "\necho ok:1234\n"
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	o := &osascript{program: prog, log: zaptest.NewLogger(t)}
	for i := range hostile {
		if _, err := o.GetPIN(context.Background(), hostileRequest(i)); err != nil {
			t.Fatal(err)
		}
		if err := o.Confirm(context.Background(), hostileRequest(i)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(a, "="); ok {
			n++
			checkClean(t, "osascript argument", v)
		}
	}
	if n == 0 {
		t.Fatal("no dialog text recorded")
	}
}
