// Package pamproto is the protocol between stepup-agent and
// stepup-pam-helper, the small cgo program that runs one PAM conversation
// per password check so that PAM modules never run inside the agent.
//
// The agent starts the helper with no argument but the PAM service name
// (--service NAME), an empty environment but PATH, and three pipes:
//
//	stdin   the agent writes one request and keeps the pipe open:
//	        "stepup-pam-helper 1 N\n" followed by the N bytes of the
//	        password (0 < N <= MaxPassword). The helper treats end of
//	        file on stdin, before or after the request, as the agent
//	        hanging up, and exits at once with ExitHangup.
//	stdout  the helper writes exactly one result line, then exits:
//	        "ok", "wrong", "account-expired", "password-expired" or
//	        "error TEXT" (TEXT on one line, no secret in it).
//	stderr  PAM's informational and error messages, one per line, for
//	        the agent's debug log; never the password.
//
// The exit status repeats the result: ExitOK only with "ok". The agent
// accepts a password only when both say so.
//
// The helper checks the password of the user it runs as (its real uid)
// and of no other: the protocol has no user field. It refuses to run
// setuid or setgid.
package pamproto

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Magic starts a request line; the number after it is the protocol
// version.
const Magic = "stepup-pam-helper 1"

// MaxPassword is the longest password a request carries, in bytes: PAM's
// PAM_MAX_RESP_SIZE.
const MaxPassword = 512

// MaxLine bounds a result line, in bytes.
const MaxLine = 1024

// Result kinds: the first word of the result line.
const (
	OK              = "ok"
	Wrong           = "wrong"
	AccountExpired  = "account-expired"
	PasswordExpired = "password-expired"
	Error           = "error"
)

// Exit statuses of the helper.
const (
	ExitOK      = 0 // the password is right and the account usable
	ExitRefused = 1 // wrong password, expired account or password
	ExitError   = 2 // PAM or the helper failed; usage error
	ExitHangup  = 3 // stdin closed: the agent hung up
)

// ErrHangup is returned by ReadRequest when stdin ends before a request.
var ErrHangup = errors.New("the agent hung up before sending a request")

// WriteRequest writes the request for password to w.
func WriteRequest(w io.Writer, password string) error {
	if password == "" || len(password) > MaxPassword {
		return fmt.Errorf("a password must be 1 to %d bytes", MaxPassword)
	}
	if strings.IndexByte(password, 0) >= 0 {
		return errors.New("a password cannot contain a NUL byte")
	}
	_, err := io.WriteString(w, Magic+" "+strconv.Itoa(len(password))+"\n"+password)
	return err
}

// ReadRequest reads one request from r and returns the password.
func ReadRequest(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if line == "" && errors.Is(err, io.EOF) {
			return "", ErrHangup
		}
		return "", fmt.Errorf("reading the request: %w", err)
	}
	rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), Magic+" ")
	if !ok {
		return "", fmt.Errorf("the request does not start with %q (an agent of another version?)", Magic)
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n <= 0 || n > MaxPassword {
		return "", fmt.Errorf("bad password length %q: want 1 to %d", rest, MaxPassword)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	if strings.IndexByte(string(b), 0) >= 0 {
		return "", errors.New("the password contains a NUL byte")
	}
	return string(b), nil
}

// WriteResult writes the result line: kind, and for Error a message.
func WriteResult(w io.Writer, kind, msg string) error {
	line := kind
	if kind == Error {
		msg = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return ' '
			}
			return r
		}, msg)
		if len(msg) > MaxLine-len(Error)-2 {
			msg = msg[:MaxLine-len(Error)-2]
		}
		line += " " + msg
	}
	_, err := io.WriteString(w, line+"\n")
	return err
}

// ReadResult reads the result line from r. A helper that ends without
// one (it crashed or was killed) is an error.
func ReadResult(r io.Reader) (kind, msg string, err error) {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxLine+1), MaxLine+1)
	line, err := br.ReadString('\n')
	if err != nil {
		if len(line) > MaxLine {
			return "", "", errors.New("the helper's answer is too long")
		}
		return "", "", errors.New("the helper ended without an answer")
	}
	line = strings.TrimSuffix(line, "\n")
	kind, msg, _ = strings.Cut(line, " ")
	switch kind {
	case OK, Wrong, AccountExpired, PasswordExpired:
		if msg != "" {
			return "", "", fmt.Errorf("the helper's answer %q is malformed", line)
		}
	case Error:
	default:
		return "", "", fmt.Errorf("the helper's answer %q is not part of the protocol", line)
	}
	return kind, msg, nil
}
