package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of authorizationDetails (DESIGN.md, "Caller and action binding").
const (
	MaxDetailEntries = 8
	MaxDetailsBytes  = 2048 // the whole array as compact JSON
)

// RawDetails is an authorizationDetails value as it travels: the JSON
// array, verbatim. JSON null reads as absent. ParseDetails validates it.
type RawDetails []byte

// MarshalJSON implements json.Marshaler.
func (r RawDetails) MarshalJSON() ([]byte, error) {
	if len(r) == 0 {
		return []byte("null"), nil
	}
	return r, nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (r *RawDetails) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*r = nil
		return nil
	}
	*r = append((*r)[:0], b...)
	return nil
}

// Details are validated authorization details (RFC 9396): at most
// MaxDetailEntries objects, each with a string type and flat string,
// number or boolean fields, at most MaxDetailsBytes as compact JSON.
type Details struct {
	raw     RawDetails // compact, as sent
	canon   string     // keys sorted, numbers by value: for Equal
	Entries []DetailEntry
}

// DetailEntry is one entry, its fields in the order sent (type among them).
type DetailEntry struct {
	Type   string
	Fields []DetailField
}

// DetailField is one field of an entry. Text is the value as shown: a
// string's text, a number's JSON text, true or false.
type DetailField struct {
	Key  string
	Text string
}

func detailsError(format string, args ...any) error {
	return Errorf(CodeInvalidParams, "authorizationDetails: "+format, args...).
		WithHint("send an array of at most %d objects, each with a string \"type\" and flat string, number or boolean fields, at most %d bytes as compact JSON", MaxDetailEntries, MaxDetailsBytes)
}

// ParseDetails validates raw. Absent (empty or null) gives nil, nil;
// anything invalid is a -32602 *Error whose message gives the reason.
func ParseDetails(raw RawDetails) (*Details, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if len(raw) > 16*MaxDetailsBytes {
		return nil, detailsError("%d bytes; at most %d as compact JSON", len(raw), MaxDetailsBytes)
	}
	if !utf8.Valid(raw) {
		return nil, detailsError("not valid UTF-8")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, detailsError("not valid JSON: %v", err)
	}
	if compact.Len() > MaxDetailsBytes {
		return nil, detailsError("%d bytes as compact JSON; at most %d", compact.Len(), MaxDetailsBytes)
	}
	d := &Details{raw: RawDetails(compact.Bytes())}
	dec := json.NewDecoder(bytes.NewReader(d.raw))
	dec.UseNumber()
	if tok, _ := dec.Token(); tok != json.Delim('[') {
		return nil, detailsError("must be an array of objects")
	}
	var canon strings.Builder
	canon.WriteByte('[')
	for dec.More() {
		i := len(d.Entries)
		if i == MaxDetailEntries {
			return nil, detailsError("more than %d entries", MaxDetailEntries)
		}
		e, c, err := parseEntry(dec, i)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			canon.WriteByte(',')
		}
		canon.WriteString(c)
		d.Entries = append(d.Entries, e)
	}
	if _, err := dec.Token(); err != nil {
		return nil, detailsError("not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, detailsError("must be one array")
	}
	if len(d.Entries) == 0 {
		return nil, detailsError("empty array: name at least one entry, or leave authorizationDetails out")
	}
	canon.WriteByte(']')
	d.canon = canon.String()
	return d, nil
}

func parseEntry(dec *json.Decoder, i int) (DetailEntry, string, error) {
	var e DetailEntry
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return e, "", detailsError("entry %d is not an object", i)
	}
	type kv struct{ k, v string }
	var canon []kv
	seen := map[string]bool{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return e, "", detailsError("not valid JSON: %v", err)
		}
		k := kt.(string)
		if k == "" {
			return e, "", detailsError("entry %d has an empty key", i)
		}
		if seen[k] {
			// Parsers disagree on which of two equal keys wins.
			return e, "", detailsError("entry %d has the key %q twice", i, k)
		}
		seen[k] = true
		vt, err := dec.Token()
		if err != nil {
			return e, "", detailsError("not valid JSON: %v", err)
		}
		var text, cv string
		switch v := vt.(type) {
		case string:
			text = v
			b, _ := json.Marshal(v)
			cv = string(b)
		case json.Number:
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil || math.IsInf(f, 0) {
				return e, "", detailsError("entry %d: %s: the number %s is out of range", i, k, v)
			}
			text = string(v)
			cv = strconv.FormatFloat(f, 'g', -1, 64)
		case bool:
			text = strconv.FormatBool(v)
			cv = text
		case nil:
			return e, "", detailsError("entry %d: %s is null: values are strings, numbers or booleans", i, k)
		default:
			return e, "", detailsError("entry %d: %s is an object or array: fields must be flat (strings, numbers, booleans)", i, k)
		}
		if k == "type" {
			s, ok := vt.(string)
			if !ok || s == "" {
				return e, "", detailsError("entry %d: type must be a non-empty string", i)
			}
			e.Type = s
		}
		e.Fields = append(e.Fields, DetailField{Key: k, Text: text})
		kb, _ := json.Marshal(k)
		canon = append(canon, kv{string(kb), cv})
	}
	if _, err := dec.Token(); err != nil {
		return e, "", detailsError("not valid JSON: %v", err)
	}
	if e.Type == "" {
		return e, "", detailsError("entry %d has no \"type\"", i)
	}
	sort.Slice(canon, func(a, b int) bool { return canon[a].k < canon[b].k })
	var b strings.Builder
	b.WriteByte('{')
	for j, f := range canon {
		if j > 0 {
			b.WriteByte(',')
		}
		b.WriteString(f.k)
		b.WriteByte(':')
		b.WriteString(f.v)
	}
	b.WriteByte('}')
	return e, b.String(), nil
}

// Raw returns the details as compact JSON, as sent: what the token
// carries. Nil Details give nil.
func (d *Details) Raw() RawDetails {
	if d == nil {
		return nil
	}
	return d.raw
}

// Canonical returns a string equal for equal details (JSON equality:
// same entries in the same order, same keys and values, any key order
// within an entry); "" for none. Use it as a map key or to compare
// without parsing again.
func (d *Details) Canonical() string {
	if d == nil {
		return ""
	}
	return d.canon
}

// Equal reports JSON equality; absent equals only absent.
func (d *Details) Equal(o *Details) bool { return d.Canonical() == o.Canonical() }

// DetailsEqual parses and compares two raw values; an invalid one is
// equal to nothing.
func DetailsEqual(a, b RawDetails) bool {
	da, err1 := ParseDetails(a)
	db, err2 := ParseDetails(b)
	return err1 == nil && err2 == nil && da.Equal(db)
}

// Lines returns one sanitized line per entry for the prompt's "Approve:"
// block: "wallet_export: address 0x12ab, amount 5". Control and invisible
// characters are stripped (Sanitize); nothing is cut: a prompt driver
// that cannot show every line refuses the request.
func (d *Details) Lines() []string {
	if d == nil {
		return nil
	}
	out := make([]string, 0, len(d.Entries))
	for _, e := range d.Entries {
		var b strings.Builder
		b.WriteString(Sanitize(e.Type))
		first := true
		for _, f := range e.Fields {
			if f.Key == "type" {
				continue
			}
			if first {
				b.WriteString(": ")
				first = false
			} else {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %s", Sanitize(f.Key), sanitizeValue(f.Text))
		}
		out = append(out, b.String())
	}
	return out
}

func sanitizeValue(s string) string {
	s = Sanitize(s)
	if s == "" || strings.ContainsAny(s, ",:") || strings.TrimSpace(s) != s {
		return strconv.Quote(s)
	}
	return s
}

// Sanitize strips what could disguise a prompt's text: control
// characters (C0, C1, DEL; line breaks included), format characters
// (bidirectional overrides, zero-width joiners and spaces, tags), line and
// paragraph separators, and invalid UTF-8.
func Sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == utf8.RuneError:
			return -1
		case r == '\t':
			return ' '
		case unicode.IsControl(r), unicode.Is(unicode.Cf, r), unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r):
			return -1
		case r >= 0xFE00 && r <= 0xFE0F, r >= 0xE0100 && r <= 0xE01EF: // variation selectors
			return -1
		}
		return r
	}, s)
}
