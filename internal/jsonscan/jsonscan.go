// Package jsonscan is a JSON scanner for the protocol's hot paths: it
// checks the grammar of RFC 8259 and picks out values in one pass without
// allocating, for the callers that read the plain shapes of requests and
// answers without encoding/json's reflection (ipc's request envelope, the
// client's answers). It decodes nothing itself: a caller takes the
// shapes it knows and leaves everything else to encoding/json, the one
// decoder of record, and fuzzes its own reader against it.
package jsonscan

import (
	"bytes"
	"unicode/utf8"
)

// MaxDepth is the nesting Value follows; deeper texts are refused (the
// caller hands them to encoding/json, which allows 10000).
const MaxDepth = 64

// Scanner reads one JSON text in B from position I.
type Scanner struct {
	B []byte
	I int
}

// Space skips JSON white space.
func (s *Scanner) Space() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Byte consumes c if it comes next.
func (s *Scanner) Byte(c byte) bool {
	if s.I < len(s.B) && s.B[s.I] == c {
		s.I++
		return true
	}
	return false
}

// End reports whether only white space follows.
func (s *Scanner) End() bool {
	s.Space()
	return s.I == len(s.B)
}

// Str scans a string and returns its contents; plain is false when it
// is not a valid string or holds an escape.
func (s *Scanner) Str() (v []byte, plain bool) {
	if !s.Byte('"') {
		return nil, false
	}
	start := s.I
	for s.I < len(s.B) {
		c := s.B[s.I]
		switch {
		case c == '"':
			v = s.B[start:s.I]
			s.I++
			return v, true
		case c == '\\' || c < 0x20:
			return nil, false
		}
		s.I++
	}
	return nil, false
}

// SkipStr scans any valid string, escapes included.
func (s *Scanner) SkipStr() bool {
	if !s.Byte('"') {
		return false
	}
	for s.I < len(s.B) {
		c := s.B[s.I]
		s.I++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.I >= len(s.B) {
				return false
			}
			e := s.B[s.I]
			s.I++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if s.I+4 > len(s.B) {
					return false
				}
				for _, h := range s.B[s.I : s.I+4] {
					if !isHex(h) {
						return false
					}
				}
				s.I += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// Value scans any JSON value, nested at most MaxDepth deep.
func (s *Scanner) Value(depth int) bool {
	if s.I >= len(s.B) || depth > MaxDepth {
		return false
	}
	switch c := s.B[s.I]; {
	case c == '"':
		return s.SkipStr()
	case c == '{':
		return s.list('{', '}', func() bool {
			if !s.SkipStr() {
				return false
			}
			s.Space()
			if !s.Byte(':') {
				return false
			}
			s.Space()
			return s.Value(depth + 1)
		})
	case c == '[':
		return s.list('[', ']', func() bool { return s.Value(depth + 1) })
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return false
}

func (s *Scanner) lit(l string) bool {
	if len(s.B)-s.I >= len(l) && string(s.B[s.I:s.I+len(l)]) == l {
		s.I += len(l)
		return true
	}
	return false
}

// number scans a number by RFC 8259's grammar.
func (s *Scanner) number() bool {
	s.Byte('-')
	if s.Byte('0') {
	} else if s.digits() == 0 {
		return false
	}
	if s.Byte('.') && s.digits() == 0 {
		return false
	}
	if s.Byte('e') || s.Byte('E') {
		if !s.Byte('+') {
			s.Byte('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *Scanner) digits() int {
	n := 0
	for s.I < len(s.B) && s.B[s.I] >= '0' && s.B[s.I] <= '9' {
		s.I++
		n++
	}
	return n
}

// PlainString scans a string without escapes whose contents are valid
// UTF-8 (encoding/json would replace invalid bytes), and returns it.
func (s *Scanner) PlainString() (string, bool) {
	v, plain := s.Str()
	if !plain || !utf8.Valid(v) {
		return "", false
	}
	return string(v), true
}

// Bool scans true or false.
func (s *Scanner) Bool() (v, ok bool) {
	switch {
	case s.lit("true"):
		return true, true
	case s.lit("false"):
		return false, true
	}
	return false, false
}

// Null reports whether null comes next, without consuming it.
func (s *Scanner) Null() bool {
	return s.I < len(s.B) && s.B[s.I] == 'n'
}

// Object scans an object whose keys are plain strings, calling member
// with each key and the scanner at its value; member scans the value and
// reports whether it could. Object reports false at the first member
// that could not, or where the text is no such object.
func (s *Scanner) Object(member func(key []byte) bool) bool {
	return s.list('{', '}', func() bool {
		key, plain := s.Str()
		if !plain {
			return false
		}
		s.Space()
		if !s.Byte(':') {
			return false
		}
		s.Space()
		return member(key)
	})
}

// Array scans an array, calling elem with the scanner at each element;
// elem scans it and reports whether it could.
func (s *Scanner) Array(elem func() bool) bool { return s.list('[', ']', elem) }

// list scans open, items separated by commas, and close, with white
// space around each; item scans one item and reports whether it could.
// It is the one loop of objects and arrays, for Value, Object and Array.
func (s *Scanner) list(open, close byte, item func() bool) bool {
	s.Space()
	if !s.Byte(open) {
		return false
	}
	s.Space()
	if s.Byte(close) {
		return true
	}
	for {
		s.Space()
		if !item() {
			return false
		}
		s.Space()
		if s.Byte(close) {
			return true
		}
		if !s.Byte(',') {
			return false
		}
	}
}

// Folds reports whether key is one of names in another case:
// encoding/json matches keys case-insensitively (Unicode's simple
// folding, so "K" with the Kelvin sign is "k"), so a reader that matches
// exact keys must leave such a text to it.
func Folds(key []byte, names ...string) bool {
	for _, n := range names {
		if string(key) != n && bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}
