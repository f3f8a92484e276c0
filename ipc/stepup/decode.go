package stepup

import (
	"encoding/json"
	"reflect"
	"slices"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/jsonscan"
)

// Answers without encoding/json's reflection. A command such as
// `stepupctl check` makes one call and exits: building encoding/json's
// field cache for the answer's types was about 4% of the whole process
// (docs/BENCHMARKS.md, Notes). The readers below take the plain shapes the
// agent writes (exact keys, strings without escapes, no nulls) and leave
// anything else to encoding/json, which stays the decoder of record:
// what they accept decodes to the same value through encoding/json
// (FuzzDecodeResponse, FuzzDecodeCheck).

// decodeResponse decodes an answer line into resp.
func decodeResponse(line []byte, resp *response) error {
	if scanResponse(line, resp) {
		return nil
	}
	*resp = response{}
	return json.Unmarshal(line, resp)
}

// scanResponse reads an answer of the shape {"jsonrpc":…,"id":N,
// "result":…}; an error answer, a null id or result, or any other shape
// reports false. resp.ID and resp.Result alias line.
func scanResponse(line []byte, resp *response) bool {
	s := jsonscan.Scanner{B: line}
	var id, result []byte
	ok := s.Object(func(key []byte) bool {
		start := s.I
		switch string(key) {
		case "id", "result":
			if s.Null() || !s.Value(0) {
				return false
			}
			if key[0] == 'i' {
				id = line[start:s.I]
			} else {
				result = line[start:s.I]
			}
			return true
		case "jsonrpc":
			return s.Value(0)
		}
		// "error", and keys encoding/json would fold onto a member.
		if string(key) == "error" || jsonscan.Folds(key, "id", "result", "error", "jsonrpc") {
			return false
		}
		return s.Value(0)
	}) && s.End()
	if !ok || id == nil || result == nil {
		return false
	}
	*resp = response{ID: id, Result: result}
	return true
}

// decodeResult decodes a result into v: the isStepUpRequired answer by
// its own reader where it can (into a zero value), anything else by
// encoding/json.
func decodeResult(b []byte, v any) error {
	if r, ok := v.(*api.StepUpRequired); ok && reflect.ValueOf(r).Elem().IsZero() {
		if scanCheck(b, r) {
			return nil
		}
		*r = api.StepUpRequired{}
	}
	return json.Unmarshal(b, v)
}

// checkKeys are the members of api.StepUpRequired.
var checkKeys = []string{"required", "scope", "methods", "defaultMethod", "expiresAt",
	"credentials", "defaultCredentialId", "locked", "bind"}

// scanCheck reads an isStepUpRequired result into r (a zero value),
// reporting false for any shape it does not take (r is then partly
// written).
func scanCheck(b []byte, r *api.StepUpRequired) bool {
	s := jsonscan.Scanner{B: b}
	var seen uint16 // members read, by checkKeys index
	ok := s.Object(func(key []byte) bool {
		if s.Null() {
			return false
		}
		// A repeated member goes to encoding/json: it decodes the second
		// array into the elements of the first, keeping what the second
		// leaves out.
		if i := slices.Index(checkKeys, string(key)); i >= 0 {
			if seen&(1<<i) != 0 {
				return false
			}
			seen |= 1 << i
		}
		var ok bool
		switch string(key) {
		case "required":
			r.Required, ok = s.Bool()
		case "scope":
			r.Scope, ok = s.PlainString()
		case "methods":
			r.Methods, ok = scanStrings(&s)
		case "defaultMethod":
			r.DefaultMethod, ok = s.PlainString()
		case "expiresAt":
			start := s.I
			if ok = s.SkipStr(); ok {
				var t time.Time
				ok = t.UnmarshalJSON(b[start:s.I]) == nil
				r.ExpiresAt = &t
			}
		case "credentials":
			r.Credentials, ok = scanCredentials(&s)
		case "defaultCredentialId":
			r.DefaultCredentialID, ok = s.PlainString()
		case "locked":
			r.Locked, ok = s.Bool()
		case "bind":
			r.Bind, ok = s.PlainString()
		default:
			ok = !jsonscan.Folds(key, checkKeys...) && s.Value(0)
		}
		return ok
	}) && s.End()
	return ok
}

// scanStrings reads an array of plain strings.
func scanStrings(s *jsonscan.Scanner) ([]string, bool) {
	out := []string{}
	ok := s.Array(func() bool {
		v, ok := s.PlainString()
		out = append(out, v)
		return ok
	})
	return out, ok
}

var credentialKeys = []string{"id", "method", "label"}

// scanCredentials reads an array of api.CredentialRef objects.
func scanCredentials(s *jsonscan.Scanner) ([]api.CredentialRef, bool) {
	out := []api.CredentialRef{}
	ok := s.Array(func() bool {
		var c api.CredentialRef
		ok := s.Object(func(key []byte) bool {
			if s.Null() {
				return false
			}
			var ok bool
			switch string(key) {
			case "id":
				c.ID, ok = s.PlainString()
			case "method":
				c.Method, ok = s.PlainString()
			case "label":
				c.Label, ok = s.PlainString()
			default:
				ok = !jsonscan.Folds(key, credentialKeys...) && s.Value(0)
			}
			return ok
		})
		out = append(out, c)
		return ok
	})
	return out, ok
}
