package stephttp

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error codes of a Bearer challenge: RFC 9470 section 3 and RFC 6750
// section 3.1.
const (
	ErrorInsufficientUserAuthentication = "insufficient_user_authentication"
	ErrorInvalidToken                   = "invalid_token"
	// ErrorInvalidDPoPProof is RFC 9449's error for a missing or bad proof.
	ErrorInvalidDPoPProof = "invalid_dpop_proof"
)

// Challenge is a Bearer challenge of a WWW-Authenticate header (RFC 6750
// section 3) with the step-up parameters of RFC 9470: the scopes to step
// up for, the acceptable authentication context classes, and how recent
// the authentication must be.
type Challenge struct {
	// Scheme is "Bearer" (also when empty) or "DPoP" (RFC 9449 section
	// 7.1: the server wants key-bound tokens and proofs).
	Scheme      string
	Error       string
	Description string
	Scopes      []string
	ACRValues   []string
	// MaxAge is the max_age parameter; HasMaxAge says it was present
	// (max_age=0 asks for an authentication made just now).
	MaxAge    time.Duration
	HasMaxAge bool
	// Algs are a DPoP challenge's accepted proof algorithms.
	Algs []string
}

// DPoP reports whether c is a DPoP challenge.
func (c *Challenge) DPoP() bool { return c != nil && strings.EqualFold(c.Scheme, "DPoP") }

// StepUpRequested reports whether c asks the client to step up (RFC 9470's
// insufficient_user_authentication).
func (c *Challenge) StepUpRequested() bool {
	return c != nil && c.Error == ErrorInsufficientUserAuthentication
}

// String renders c as a WWW-Authenticate value.
func (c *Challenge) String() string {
	var b strings.Builder
	if c.DPoP() {
		b.WriteString("DPoP")
	} else {
		b.WriteString("Bearer")
	}
	sep := " "
	param := func(k, v string) {
		b.WriteString(sep)
		b.WriteString(k)
		b.WriteString(`="`)
		b.WriteString(quoteSafe(v))
		b.WriteString(`"`)
		sep = ", "
	}
	if c.Error != "" {
		param("error", c.Error)
	}
	if c.Description != "" {
		param("error_description", c.Description)
	}
	if len(c.Scopes) > 0 {
		param("scope", strings.Join(c.Scopes, " "))
	}
	if len(c.ACRValues) > 0 {
		param("acr_values", strings.Join(c.ACRValues, " "))
	}
	if len(c.Algs) > 0 {
		param("algs", strings.Join(c.Algs, " "))
	}
	if c.HasMaxAge {
		b.WriteString(sep)
		b.WriteString("max_age=")
		b.WriteString(strconv.FormatInt(int64(c.MaxAge/time.Second), 10))
	}
	return b.String()
}

// quoteSafe keeps the characters RFC 6750 allows in error_description and
// scope (%x20-21 / %x23-5B / %x5D-7E): no quote, no backslash, nothing
// outside printable ASCII.
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '"' || r == '\\':
			return '\''
		case r < 0x20 || r > 0x7e:
			return '?'
		}
		return r
	}, s)
}

// ParseChallenge returns the first Bearer or DPoP challenge among the
// WWW-Authenticate headers of h (RFC 7235 section 4.1: several headers,
// several challenges per header), or nil when there is none. A DPoP
// challenge has Scheme "DPoP".
func ParseChallenge(h http.Header) *Challenge {
	for _, v := range h.Values("Www-Authenticate") {
		for _, ch := range parseChallenges(v) {
			scheme := ""
			switch {
			case strings.EqualFold(ch.scheme, "Bearer"):
			case strings.EqualFold(ch.scheme, "DPoP"):
				scheme = "DPoP"
			default:
				continue
			}
			c := &Challenge{Scheme: scheme}
			for k, v := range ch.params {
				switch k {
				case "error":
					c.Error = v
				case "error_description":
					c.Description = v
				case "scope":
					c.Scopes = strings.Fields(v)
				case "acr_values":
					c.ACRValues = strings.Fields(v)
				case "algs":
					c.Algs = strings.Fields(v)
				case "max_age":
					if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 && n < 1<<31 {
						c.MaxAge, c.HasMaxAge = time.Duration(n)*time.Second, true
					}
				}
			}
			return c
		}
	}
	return nil
}

type rawChallenge struct {
	scheme string
	params map[string]string
}

// parseChallenges splits one WWW-Authenticate value into challenges:
//
//	challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//	auth-param = token BWS "=" BWS ( token / quoted-string )
//
// A parameter-less token68 is skipped; a malformed rest ends the parse.
func parseChallenges(s string) []rawChallenge {
	var out []rawChallenge
	p := &lexer{s: s}
	for {
		p.skip(" \t,")
		if p.done() {
			return out
		}
		scheme := p.token()
		if scheme == "" {
			return out
		}
		ch := rawChallenge{scheme: scheme, params: map[string]string{}}
		for {
			p.skip(" \t,")
			save := p.i
			name := p.token()
			p.skip(" \t")
			if name == "" || !p.eat('=') {
				// Not a parameter: the next challenge's scheme.
				p.i = save
				break
			}
			if p.done() || p.peek() == '=' || p.peek() == ',' {
				// A token68 ("abc=="), not a parameter: skip it.
				p.skip("=")
				break
			}
			p.skip(" \t")
			var val string
			if p.peek() == '"' {
				val = p.quoted()
			} else {
				val = p.token()
			}
			ch.params[strings.ToLower(name)] = val
		}
		out = append(out, ch)
	}
}

type lexer struct {
	s string
	i int
}

func (l *lexer) done() bool { return l.i >= len(l.s) }
func (l *lexer) peek() byte {
	if l.done() {
		return 0
	}
	return l.s[l.i]
}
func (l *lexer) eat(c byte) bool {
	if l.peek() == c && !l.done() {
		l.i++
		return true
	}
	return false
}
func (l *lexer) skip(set string) {
	for !l.done() && strings.IndexByte(set, l.s[l.i]) >= 0 {
		l.i++
	}
}

// token reads an RFC 7230 token (tchar) or a token68 body.
func (l *lexer) token() string {
	start := l.i
	for !l.done() {
		c := l.s[l.i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			if c == '/' { // token68 allows '/', tchar does not; accept it
				l.i++
				continue
			}
			break
		}
		l.i++
	}
	return l.s[start:l.i]
}

// quoted reads a quoted-string, undoing quoted-pairs.
func (l *lexer) quoted() string {
	l.i++ // opening quote
	var b strings.Builder
	for !l.done() {
		c := l.s[l.i]
		l.i++
		switch c {
		case '"':
			return b.String()
		case '\\':
			if !l.done() {
				b.WriteByte(l.s[l.i])
				l.i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
