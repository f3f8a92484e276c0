package prompt

// A small client for the Assuan protocol as pinentry speaks it
// (https://www.gnupg.org/documentation/manuals/assuan/, "Client requests"
// and "Server responses"; pinentry's commands are in pinentry's
// doc/pinentry.texi, "Protocol").
//
// We write our own rather than use github.com/twpayne/go-pinentry (its v4
// reads the timeout reply as a cancel) or github.com/gopasspw/pinentry (it
// does not percent-escape the text it sends, so a newline in a description
// ends the command and the rest is read as another one).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxLine is Assuan's line limit (ASSUAN_LINELENGTH, 1000 bytes without
// the line feed). Longer lines are an error on both sides.
const maxLine = 1000

// gpg-error codes pinentry answers with. An Assuan error code is
// (source << 24) | code; pinentry's source is GPG_ERR_SOURCE_PINENTRY (5),
// so a cancel arrives as 83886179 = 5<<24 | 99. We compare the code part
// only, so a pinentry built with another source still maps right.
const (
	gpgErrTimeout       = 62  // GPG_ERR_TIMEOUT: SETTIMEOUT ran out ("ERR 83886142 Timeout <Pinentry>")
	gpgErrCanceled      = 99  // GPG_ERR_CANCELED: Cancel button, Ctrl-D ("ERR 83886179 Operation cancelled <Pinentry>")
	gpgErrNotConfirmed  = 114 // GPG_ERR_NOT_CONFIRMED: CONFIRM answered with Cancel
	gpgErrFullyCanceled = 198 // GPG_ERR_FULLY_CANCELED
	gpgErrSystemError   = 1 << 15
	gpgErrCodeMask      = 1<<16 - 1
)

// AssuanError is an ERR response that is neither a cancel nor a timeout.
type AssuanError struct {
	Code    uint32 // the full gpg-error value, source included
	Message string // the server's description, decoded
}

func (e *AssuanError) Error() string {
	return fmt.Sprintf("pinentry: %s (code %d)", e.Message, e.Code)
}

// System reports whether the error wraps an errno (GPG_ERR_SYSTEM_ERROR):
// pinentry could not open the terminal or the display.
func (e *AssuanError) System() bool { return e.Code&gpgErrSystemError != 0 }

// assuanErr maps an ERR code to the package's errors.
func assuanErr(code uint32, msg string) error {
	switch code & gpgErrCodeMask {
	case gpgErrCanceled, gpgErrFullyCanceled, gpgErrNotConfirmed:
		return ErrCancelled
	case gpgErrTimeout:
		return ErrTimeout
	}
	return &AssuanError{Code: code, Message: msg}
}

// assuanEscape percent-escapes s for a command argument: '%', CR, LF, the
// other C0 controls and DEL become %XX, as must everything that would end
// or split the line. A leading space is escaped too, because the server
// skips the blanks between a command and its argument.
func assuanEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' || c < 0x20 || c == 0x7f || (c == ' ' && i == 0) {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// MaxDescription is the room pinentry leaves for a prompt's description:
// Assuan's line limit less "SETDESC ".
const MaxDescription = maxLine - len("SETDESC ")

// DescriptionLen is the length of desc as pinentry's SETDESC line carries
// it (escaped); more than MaxDescription would be cut.
func DescriptionLen(desc string) int { return len(assuanEscape(desc)) }

// assuanCommand builds one command line (without the line feed), cutting
// the escaped argument at a character boundary so the line fits the limit.
func assuanCommand(verb, arg string) string {
	if arg == "" {
		return verb
	}
	esc := assuanEscape(arg)
	room := maxLine - len(verb) - 1
	if len(esc) <= room {
		return verb + " " + esc
	}
	// Too long: drop whole characters from the end of the raw text until
	// the escaped form plus an ellipsis fits.
	const more = "…"
	for len(arg) > 0 {
		_, size := utf8.DecodeLastRuneInString(arg)
		arg = arg[:len(arg)-size]
		if e := assuanEscape(arg + more); len(e) <= room {
			return verb + " " + e
		}
	}
	return verb
}

// assuanUnescape decodes the %XX escapes of a data or status line. A '%'
// not followed by two hex digits is an error.
func assuanUnescape(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(s) {
			return nil, fmt.Errorf("assuan: truncated escape at byte %d", i)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("assuan: bad escape at byte %d", i)
		}
		out = append(out, byte(v))
		i += 2
	}
	return out, nil
}

// Response kinds (Assuan "Server responses").
type respKind int

const (
	respOK      respKind = iota // OK [text]
	respErr                     // ERR code [description]
	respData                    // D data (percent-escaped)
	respStatus                  // S keyword [args]
	respInquire                 // INQUIRE keyword [args]
	respComment                 // # anything
)

// response is one decoded server line.
type response struct {
	kind respKind
	code uint32 // ERR
	text string // OK text, ERR description, S/INQUIRE keyword and args
	data []byte // D, decoded
}

// parseResponse decodes one line from the server (without its line feed).
func parseResponse(line []byte) (response, error) {
	if len(line) > maxLine {
		return response{}, errors.New("assuan: line too long")
	}
	s := strings.TrimSuffix(string(line), "\r")
	verb, rest, _ := strings.Cut(s, " ")
	switch {
	case strings.HasPrefix(s, "#"):
		return response{kind: respComment, text: s[1:]}, nil
	case verb == "OK":
		return response{kind: respOK, text: rest}, nil
	case verb == "D":
		d, err := assuanUnescape(rest)
		if err != nil {
			return response{}, err
		}
		return response{kind: respData, data: d}, nil
	case verb == "ERR":
		num, desc, _ := strings.Cut(rest, " ")
		code, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			return response{}, fmt.Errorf("assuan: bad error code %q", num)
		}
		d, uerr := assuanUnescape(desc)
		if uerr != nil {
			d = []byte(desc)
		}
		return response{kind: respErr, code: uint32(code), text: strings.ToValidUTF8(string(d), "?")}, nil
	case verb == "S":
		if rest == "" {
			return response{}, errors.New("assuan: status line without keyword")
		}
		return response{kind: respStatus, text: rest}, nil
	case verb == "INQUIRE":
		if rest == "" {
			return response{}, errors.New("assuan: inquire without keyword")
		}
		return response{kind: respInquire, text: rest}, nil
	}
	return response{}, fmt.Errorf("assuan: unexpected response %q", truncate(verb, 16))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// assuanConn is the client side of one Assuan connection.
type assuanConn struct {
	w io.Writer
	r *bufio.Reader
}

func newAssuanConn(w io.Writer, r io.Reader) *assuanConn {
	return &assuanConn{w: w, r: bufio.NewReaderSize(r, maxLine+2)}
}

// readLine reads one response line, refusing lines over the limit.
func (c *assuanConn) readLine() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, errors.New("assuan: line too long")
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return line[:len(line)-1], nil
}

// greeting reads the server's first line, which must be OK.
func (c *assuanConn) greeting() error {
	_, err := c.transact("")
	return err
}

// transact sends one command (none when line is empty: read the greeting)
// and reads responses up to its OK or ERR, returning the data lines joined.
// Inquiries are cancelled: we never set up anything pinentry would inquire
// about.
func (c *assuanConn) transact(line string) ([]byte, error) {
	if line != "" {
		if _, err := io.WriteString(c.w, line+"\n"); err != nil {
			return nil, err
		}
	}
	var data []byte
	for {
		raw, err := c.readLine()
		if err != nil {
			return nil, err
		}
		r, err := parseResponse(raw)
		if err != nil {
			return nil, err
		}
		switch r.kind {
		case respOK:
			return data, nil
		case respErr:
			return nil, assuanErr(r.code, r.text)
		case respData:
			data = append(data, r.data...)
		case respInquire:
			if _, err := io.WriteString(c.w, "CAN\n"); err != nil {
				return nil, err
			}
		}
	}
}
