package pamproto

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	for _, pw := range []string{"x", "Pw with spaces", "line\nbreak", strings.Repeat("é", MaxPassword/2)} {
		var b bytes.Buffer
		if err := WriteRequest(&b, pw); err != nil {
			t.Fatal(err)
		}
		got, err := ReadRequest(bufio.NewReader(&b))
		if err != nil || got != pw {
			t.Fatalf("%q: got %q, %v", pw, got, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", MaxPassword+1), "a\x00b"} {
		if err := WriteRequest(&bytes.Buffer{}, bad); err == nil {
			t.Fatalf("WriteRequest(%q) accepted", bad)
		}
	}
}

func TestMalformedRequests(t *testing.T) {
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader(""))); !errors.Is(err, ErrHangup) {
		t.Fatalf("empty stdin: %v, want ErrHangup", err)
	}
	for _, in := range []string{
		"stepup-pam-helper 1 5",        // no newline
		"stepup-pam-helper 2 5\nhello", // another version
		"stepup-pam-helper 1 0\n",      // empty password
		"stepup-pam-helper 1 -3\nabc",  // negative
		"stepup-pam-helper 1 513\n" + strings.Repeat("x", 513),
		"stepup-pam-helper 1 9\nshort",  // truncated
		"stepup-pam-helper 1 3\na\x00b", // NUL
		"hello\n",
	} {
		if pw, err := ReadRequest(bufio.NewReader(strings.NewReader(in))); err == nil || errors.Is(err, ErrHangup) {
			t.Errorf("ReadRequest(%q) = %q, %v; want an error", in, pw, err)
		}
	}
}

func TestResults(t *testing.T) {
	for _, c := range []struct{ kind, msg string }{{OK, ""}, {Wrong, ""}, {AccountExpired, ""}, {PasswordExpired, ""}, {Error, "pam_start: bad\nthing"}} {
		var b bytes.Buffer
		WriteResult(&b, c.kind, c.msg)
		kind, msg, err := ReadResult(&b)
		if err != nil || kind != c.kind || msg != strings.ReplaceAll(c.msg, "\n", " ") {
			t.Fatalf("%+v: %q %q %v", c, kind, msg, err)
		}
	}
	for _, in := range []string{"", "ok", "okay\n", "ok extra\n", "wrong please\n", strings.Repeat("e", 2000) + "\n", "OK\n"} {
		if kind, _, err := ReadResult(strings.NewReader(in)); err == nil {
			t.Errorf("ReadResult(%.20q) = %q, want an error", in, kind)
		}
	}
}
