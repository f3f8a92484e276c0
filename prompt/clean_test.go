package prompt

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap/zaptest"
)

// hostile are strings a client controls (a reason, a scope, a label) that
// try to change what a prompt shows: line and paragraph separators that
// start a fake line, bidirectional overrides and isolates that reorder
// text, zero-width and other format characters that hide or join text,
// terminal control sequences, and C1 controls.
var hostile = []string{
	"read\u2028Method: passkey",
	"read\u2029Scopes: none",
	"wallet:\u202etropxe",
	"a\u2066b\u2069c\u200ed\u200ff\u061cg",
	"wallet\u200b:export\u200c\u200d\u2060\ufeff",
	"soft\u00adhyphen",
	"tag\U000e0001\U000e0041chars",
	"interlinear\ufff9a\ufffab\ufffb",
	"\x1b[2J\x1b]0;title\x07cleared",
	"carriage\rreturn\x00nul\x7fdel",
	"next\u0085line\u008dri",
	"invalid \xff\xfe utf-8",
	"mongolian\u180evowel",
	"arabic\u0600number",
}

// dirty returns the first character of s that no prompt may show: a
// control character other than a line feed, or a character of Unicode's
// categories Cf (format), Zl (line separator), Zp (paragraph separator).
func dirty(s string) (rune, bool) {
	for _, r := range s {
		if r == '\n' {
			continue
		}
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return r, true
		}
	}
	return 0, false
}

func checkClean(t *testing.T, where, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Errorf("%s: invalid UTF-8 %q", where, s)
	}
	if r, bad := dirty(s); bad {
		t.Errorf("%s shows %U: %q", where, r, s)
	}
}

func hostileRequest(i int) Request {
	h := func(k int) string { return hostile[(i+k)%len(hostile)] }
	return Request{
		Title: h(0), Description: "asks to step up for " + h(1) + "\nReason: " + h(2),
		Prompt: h(3), Error: h(4), OK: h(5), Cancel: h(6), Timeout: 10 * time.Second,
	}
}

// TestRenderIsClean: every string render hands any driver is clean.
func TestRenderIsClean(t *testing.T) {
	for i := range hostile {
		s := render(hostileRequest(i))
		for name, v := range map[string]string{"title": s.title, "desc": s.desc, "prompt": s.prompt, "error": s.errText, "ok": s.ok, "cancel": s.cancel} {
			checkClean(t, name, v)
		}
	}
	// Words around a separator stay apart.
	if got := cleanText("a\u2028b\u2029c"); got != "a b c" {
		t.Errorf("separators: %q", got)
	}
}

func FuzzCleanText(f *testing.F) {
	for _, h := range hostile {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkClean(t, "cleanText", cleanText(s))
		r := render(Request{Title: s, Description: s, Prompt: s, Error: s, OK: s, Cancel: s})
		for _, v := range []string{r.title, r.desc, r.prompt, r.errText, r.ok, r.cancel} {
			checkClean(t, "render", v)
		}
	})
}

// recorder writes a program that records its arguments (one a line,
// NUL-free) and its standard input lines to a file, and answers as
// script says; it returns the program's path and the record's.
func recorder(t *testing.T, body string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	rec := filepath.Join(dir, "record")
	prog := filepath.Join(dir, "prog")
	script := "#!/bin/sh\nREC=" + rec + "\nfor a in \"$@\"; do printf 'ARG %s\\n' \"$a\" >> \"$REC\"; done\n" + body
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return prog, rec
}

func readRecord(t *testing.T, rec string) []string {
	t.Helper()
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// TestZenityShowsCleanText: zenity's whole command line (its text, title
// and labels) is clean. The recorder stands for zenity: what is checked is
// what the driver hands it.
func TestZenityShowsCleanText(t *testing.T) {
	prog, rec := recorder(t, "echo 1234\nexit 0\n")
	z := &zenity{program: prog, t: target{Display: ":0"}, log: zaptest.NewLogger(t)}
	for i := range hostile {
		if _, err := z.GetPIN(context.Background(), hostileRequest(i)); err != nil {
			t.Fatal(err)
		}
		if err := z.Confirm(context.Background(), hostileRequest(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range readRecord(t, rec) {
		checkClean(t, "zenity argument", strings.TrimPrefix(l, "ARG "))
	}
}

// TestPinentryShowsCleanText: every text a GUI pinentry is sent over
// Assuan (SETDESC, SETTITLE, SETPROMPT, SETERROR, SETOK, SETCANCEL) is
// clean once unescaped. The recorder speaks enough Assuan to answer.
func TestPinentryShowsCleanText(t *testing.T) {
	prog, rec := recorder(t, `echo "OK ready"
while IFS= read -r line; do
  printf 'CMD %s\n' "$line" >> "$REC"
  case "$line" in
    GETPIN*) echo "D 1234"; echo OK;;
    BYE*) echo OK; exit 0;;
    *) echo OK;;
  esac
done
`)
	p := &pinentry{driver: "pinentry", program: prog, t: target{Display: ":0"}, log: zaptest.NewLogger(t)}
	for i := range hostile {
		if _, err := p.GetPIN(context.Background(), hostileRequest(i)); err != nil {
			t.Fatal(err)
		}
		if err := p.Confirm(context.Background(), hostileRequest(i)); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, l := range readRecord(t, rec) {
		l, ok := strings.CutPrefix(l, "CMD SET")
		if !ok {
			continue
		}
		_, arg, _ := strings.Cut(l, " ")
		b, err := assuanUnescape(arg)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		n++
		checkClean(t, "pinentry SET"+l[:strings.IndexByte(l+" ", ' ')], string(b))
	}
	if n == 0 {
		t.Fatal("no SET command recorded")
	}
}

// TestTerminalShowsCleanText: what the real pinentry-tty shows on the
// requester's terminal carries no control or format character of the
// request's (a pty turns line feeds into CR LF, and pinentry-tty shows
// the error in bold red with its own two SGR sequences: those are not the
// request's).
func TestTerminalShowsCleanText(t *testing.T) {
	for i := range hostile {
		tm := newTerm(t)
		p := testPinentry(t, "pinentry-tty", ttyTarget(tm))
		req := hostileRequest(i)
		req.Prompt = "Code:"
		ch := getPINAsync(context.Background(), p, req)
		tm.waitFor("Code:", 10*time.Second)
		tm.typeText("1\r")
		if r := wait(t, ch); r.err != nil {
			t.Fatalf("GetPIN: %v\nscreen: %q", r.err, tm.output())
		}
		out := strings.NewReplacer("\x1b[1;31m", "", "\x1b[0m", "").Replace(tm.output())
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			checkClean(t, "terminal line", strings.TrimRight(sc.Text(), "\r"))
		}
	}
}
