package prompt

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAssuanEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":         "plain text",
		"100%":               "100%25",
		"two\nlines":         "two%0Alines",
		"crlf\r\n":           "crlf%0D%0A",
		"esc \x1b[2J bell\a": "esc %1B[2J bell%07",
		"del\x7f":            "del%7F",
		" leading":           "%20leading",
		"Überprüfung ✓":      "Überprüfung ✓",
		"%0A literal":        "%250A literal",
	} {
		if got := assuanEscape(in); got != want {
			t.Errorf("assuanEscape(%q) = %q, want %q", in, got, want)
		}
		back, err := assuanUnescape(assuanEscape(in))
		if err != nil || string(back) != in {
			t.Errorf("round trip of %q = %q, %v", in, back, err)
		}
	}
}

func TestAssuanUnescape(t *testing.T) {
	for in, want := range map[string]string{
		"abc":        "abc",
		"a%25b":      "a%b",
		"%0a%0D":     "\n\r",
		"%C3%9C":     "Ü",
		"%00":        "\x00",
		"+not space": "+not space",
	} {
		got, err := assuanUnescape(in)
		if err != nil || string(got) != want {
			t.Errorf("assuanUnescape(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"%", "%4", "%G0", "a%+1", "%-1"} {
		if _, err := assuanUnescape(bad); err == nil {
			t.Errorf("assuanUnescape(%q) accepted", bad)
		}
	}
}

func TestAssuanCommandFitsLine(t *testing.T) {
	long := strings.Repeat("ü%\n", 600)
	line := assuanCommand("SETDESC", long)
	if len(line) > maxLine {
		t.Fatalf("line of %d bytes", len(line))
	}
	arg := strings.TrimPrefix(line, "SETDESC ")
	dec, err := assuanUnescape(arg)
	if err != nil {
		t.Fatalf("cut inside an escape: %v", err)
	}
	if !utf8.Valid(dec) || !strings.HasSuffix(string(dec), "…") || !strings.HasPrefix(long, strings.TrimSuffix(string(dec), "…")) {
		t.Fatalf("bad cut: %q", dec)
	}
	if got := assuanCommand("GETPIN", ""); got != "GETPIN" {
		t.Fatalf("no argument: %q", got)
	}
}

func TestParseResponse(t *testing.T) {
	cases := []struct {
		line string
		want response
	}{
		{"OK Pleased to meet you", response{kind: respOK, text: "Pleased to meet you"}},
		{"OK", response{kind: respOK}},
		{"OK\r", response{kind: respOK}},
		{"D 12%2534%0A", response{kind: respData, data: []byte("12%34\n")}},
		{"D ", response{kind: respData, data: []byte{}}},
		{"ERR 83886179 Operation cancelled <Pinentry>", response{kind: respErr, code: 83886179, text: "Operation cancelled <Pinentry>"}},
		{"ERR 83886142 Timeout <Pinentry>", response{kind: respErr, code: 83886142, text: "Timeout <Pinentry>"}},
		{"ERR 83886142", response{kind: respErr, code: 83886142}},
		{"S ERROR tty.? 83886142 ", response{kind: respStatus, text: "ERROR tty.? 83886142 "}},
		{"INQUIRE QUALITY abc", response{kind: respInquire, text: "QUALITY abc"}},
		{"# a comment", response{kind: respComment, text: " a comment"}},
	}
	for _, c := range cases {
		got, err := parseResponse([]byte(c.line))
		if err != nil {
			t.Errorf("parseResponse(%q): %v", c.line, err)
			continue
		}
		if got.kind != c.want.kind || got.code != c.want.code || got.text != c.want.text || !bytes.Equal(got.data, c.want.data) {
			t.Errorf("parseResponse(%q) = %+v, want %+v", c.line, got, c.want)
		}
	}
	for _, bad := range []string{"", "BOGUS", "ERR", "ERR x", "ERR 99999999999", "D %", "D %zz", "S", "INQUIRE", "ok lowercase", strings.Repeat("D ", 600)} {
		if _, err := parseResponse([]byte(bad)); err == nil {
			t.Errorf("parseResponse(%q) accepted", bad)
		}
	}
}

func TestAssuanErrMapping(t *testing.T) {
	for code, want := range map[uint32]error{
		83886179: ErrCancelled, // GPG_ERR_CANCELED, source pinentry
		83886194: ErrCancelled, // GPG_ERR_NOT_CONFIRMED
		83886278: ErrCancelled, // GPG_ERR_FULLY_CANCELED
		83886142: ErrTimeout,   // GPG_ERR_TIMEOUT
		99:       ErrCancelled, // another source
		62:       ErrTimeout,
	} {
		if err := assuanErr(code, "x"); !errors.Is(err, want) {
			t.Errorf("assuanErr(%d) = %v, want %v", code, err, want)
		}
	}
	// pinentry-curses with no terminal: an errno, not a cancel.
	err := assuanErr(83918929, "No such file or directory <Pinentry>")
	var ae *AssuanError
	if !errors.As(err, &ae) || !ae.System() || isAnswer(err) {
		t.Fatalf("system error mapped to %v", err)
	}
}

// A scripted pinentry: the conversation as the real programs answer it.
func TestAssuanTransact(t *testing.T) {
	server := strings.Join([]string{
		"OK Pleased to meet you",
		"# comment",
		"OK",
		"S PASSWORD_FROM_CACHE",
		"D 12",
		"D 34%25",
		"OK",
		"INQUIRE QUALITY x",
		"ERR 83886179 Operation cancelled <Pinentry>",
		"OK closing connection",
	}, "\n") + "\n"
	var sent bytes.Buffer
	c := newAssuanConn(&sent, strings.NewReader(server))
	if err := c.greeting(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.transact(assuanCommand("SETDESC", "a\nb")); err != nil {
		t.Fatal(err)
	}
	data, err := c.transact("GETPIN")
	if err != nil || string(data) != "1234%" {
		t.Fatalf("GETPIN = %q, %v", data, err)
	}
	if _, err := c.transact("GETPIN"); !errors.Is(err, ErrCancelled) {
		t.Fatalf("second GETPIN = %v", err)
	}
	if _, err := c.transact("BYE"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.transact("BYE"); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
	want := "SETDESC a%0Ab\nGETPIN\nGETPIN\nCAN\nBYE\nBYE\n"
	if sent.String() != want {
		t.Fatalf("sent %q, want %q", sent.String(), want)
	}
}

func TestAssuanLongLine(t *testing.T) {
	c := newAssuanConn(io.Discard, strings.NewReader("D "+strings.Repeat("x", 2000)+"\nOK\n"))
	if _, err := c.transact(""); err == nil {
		t.Fatal("accepted a line over the limit")
	}
	c = newAssuanConn(io.Discard, strings.NewReader("OK no newline"))
	if _, err := c.transact(""); err != io.ErrUnexpectedEOF {
		t.Fatalf("unterminated line: %v", err)
	}
}
