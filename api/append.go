package api

import (
	"encoding/json"
	"strconv"
)

// AppendJSON appends r as encoding/json marshals it, without reflection:
// the answer to isStepUpRequired is the agent's hot path (the server
// appends it to the answer line; ipc.JSONAppender). It fails where
// json.Marshal fails (an expiry outside the years 0-9999).
func (r *StepUpRequired) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"required":`...)
	b = strconv.AppendBool(b, r.Required)
	b = append(b, `,"scope":`...)
	b = appendJSONString(b, r.Scope)
	b = append(b, `,"methods":`...)
	b = appendJSONStrings(b, r.Methods)
	if r.DefaultMethod != "" {
		b = append(b, `,"defaultMethod":`...)
		b = appendJSONString(b, r.DefaultMethod)
	}
	if r.ExpiresAt != nil {
		b = append(b, `,"expiresAt":"`...)
		var err error
		if b, err = r.ExpiresAt.AppendText(b); err != nil {
			return b, err
		}
		b = append(b, '"')
	}
	if len(r.Credentials) > 0 {
		c, err := json.Marshal(r.Credentials)
		if err != nil {
			return b, err
		}
		b = append(b, `,"credentials":`...)
		b = append(b, c...)
	}
	if r.DefaultCredentialID != "" {
		b = append(b, `,"defaultCredentialId":`...)
		b = appendJSONString(b, r.DefaultCredentialID)
	}
	if r.Locked {
		b = append(b, `,"locked":true`...)
	}
	if r.Bind != "" {
		b = append(b, `,"bind":`...)
		b = appendJSONString(b, r.Bind)
	}
	return append(b, '}'), nil
}

// appendJSONStrings appends ss as json.Marshal writes a []string (nil
// as null).
func appendJSONStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s quoted as json.Marshal quotes it. Printable
// ASCII that needs no escape (scope and method names) is copied; anything
// else goes through encoding/json, which escapes <, > and &, control
// characters, invalid UTF-8, U+2028 and U+2029.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AppendJSON appends p as encoding/json marshals it, without reflection
// when it carries only a scope (stepupctl check, the common request).
func (p ScopeParams) AppendJSON(b []byte) ([]byte, error) {
	if len(p.AuthorizationDetails) == 0 && p.Cnf == nil {
		b = append(b, `{"scope":`...)
		b = appendJSONString(b, p.Scope)
		return append(b, '}'), nil
	}
	j, err := json.Marshal(p)
	return append(b, j...), err
}

// AppendRequest appends one request line (with its newline) of the
// protocol's envelope: params as json.Marshal has them (nil as {}).
func AppendRequest(b []byte, id uint64, method string, params any) ([]byte, error) {
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, method)
	b = append(b, `,"params":`...)
	var err error
	// The hand-written params only for their exact types: a struct
	// embedding ScopeParams would promote AppendJSON and lose its own
	// fields.
	switch p := params.(type) {
	case nil:
		b = append(b, "{}"...)
	case ScopeParams:
		b, err = p.AppendJSON(b)
	case *ScopeParams:
		if p == nil {
			b = append(b, "null"...)
		} else {
			b, err = p.AppendJSON(b)
		}
	default:
		var j []byte
		j, err = json.Marshal(p)
		b = append(b, j...)
	}
	if err != nil {
		return b, err
	}
	return append(b, "}\n"...), nil
}

// AppendJSON appends r as encoding/json marshals it, without reflection
// (getToken's answer for a held token, on the hot path). It fails where
// json.Marshal fails (an expiry outside the years 0-9999).
func (r *GetTokenResult) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"token":`...)
	b = appendJSONString(b, r.Token)
	b = append(b, `,"scopes":`...)
	b = appendJSONStrings(b, r.Scopes)
	b = append(b, `,"expiresAt":"`...)
	var err error
	if b, err = r.ExpiresAt.AppendText(b); err != nil {
		return b, err
	}
	b = append(b, `","singleUse":`...)
	b = strconv.AppendBool(b, r.SingleUse)
	return append(b, '}'), nil
}
