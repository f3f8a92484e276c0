package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/peer"
)

// Limits on the work Parse does.
const (
	// MaxFileSize is the largest policy file Parse accepts.
	MaxFileSize = 1 << 20
	// maxNodes bounds the nodes Parse visits, aliases counted each time
	// they are followed, so that an alias bomb (a billion laughs) costs
	// no more than a large plain file.
	maxNodes = 1 << 20
	// maxErrors is how many errors one Parse reports.
	maxErrors = 20
)

// Limits of the validated values.
const (
	MaxTTL           = 24 * time.Hour
	MinPromptTimeout = time.Second
	MaxPromptTimeout = 10 * time.Minute
)

// Prompt drivers, as stepup-agent's --prompter.
var Drivers = []string{"auto", "pinentry", "zenity", "osascript", "terminal", "none"}

// Error is one validation or syntax error of a policy file: the line (1
// based, 0 when unknown), the key path (scopes."deploy:prod".ttl) and
// what is wrong.
type Error struct {
	Line int
	Path string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every error found in one file, in file order. Parse
// returns one (never empty) when the file does not validate; errors.As
// finds the individual *Error values.
type ErrorList []*Error

func (l ErrorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap returns the errors for errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// errTooMany stops decoding once maxErrors errors or maxNodes nodes are
// reached.
var errTooMany = errors.New("stop")

// Parse parses and validates a policy file's contents. An empty file (or
// one with only comments) gives the built-in defaults. Every error names
// the line and the key path:
//
//	line 7: scopes."deploy:prod".ttl: "2x" is not a duration (use 90s, 2m, 1h)
//
// Parse never panics and bounds its work: files over MaxFileSize are
// refused, and aliases are followed at most maxNodes times in all.
func Parse(data []byte) (p *Policy, err error) {
	defer func() {
		// The YAML parser is well fuzzed, but a policy file must never
		// take the agent down.
		if r := recover(); r != nil {
			p, err = nil, ErrorList{{Msg: fmt.Sprintf("cannot parse the file (internal error: %v)", r)}}
		}
	}()
	if len(data) > MaxFileSize {
		return nil, ErrorList{{Msg: fmt.Sprintf("the file is %d bytes; a policy file may be at most %d", len(data), MaxFileSize)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Default(), nil
		}
		return nil, ErrorList{syntaxError(err, data)}
	}
	for {
		// Empty documents after the first (a trailing ---) are harmless.
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, ErrorList{syntaxError(err, data)}
		}
		if len(extra.Content) > 0 && !isNull(extra.Content[0]) {
			return nil, ErrorList{{Line: extra.Line, Msg: "a second YAML document (---): a policy file holds one"}}
		}
	}
	d := &decoder{}
	p = &Policy{}
	func() {
		defer func() {
			if r := recover(); r != nil && r != errTooMany { //nolint:errorlint // sentinel
				panic(r)
			}
		}()
		root := &doc
		if root.Kind == yaml.DocumentNode {
			if len(root.Content) == 0 {
				return
			}
			root = root.Content[0]
		}
		d.policy(root, p)
	}()
	if len(d.errs) > 0 {
		// File order; errors without a line (too many) last.
		sort.SliceStable(d.errs, func(i, j int) bool {
			li, lj := d.errs[i].Line, d.errs[j].Line
			if li == 0 || lj == 0 {
				return lj == 0 && li != 0
			}
			return li < lj
		})
		return nil, d.errs
	}
	p.fill()
	p.patterns = sortPatterns(p.Scopes)
	if p.patterns == nil {
		p.patterns = []string{}
	}
	return p, nil
}

// The regexps compile on first use: stepupctl links this package and
// pays for package-level work in every run, errors or not.
var yamlLineRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`) })

// parserProblems are the messages of go.yaml.in/yaml/v3's parser (as
// opposed to its scanner). The library reports their line zero-based
// (one too low, and none at all on the first line); syntaxError adds the
// one back.
var parserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"found undefined tag handle",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found duplicate %TAG directive",
}

var unknownAnchorRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^unknown anchor '(.*)' referenced$`) })

// syntaxError turns a YAML parser error into an *Error with its line.
func syntaxError(err error, data []byte) *Error {
	m := yamlLineRE().FindStringSubmatch(err.Error())
	if m == nil {
		return &Error{Msg: "YAML syntax: " + err.Error()}
	}
	line, _ := strconv.Atoi(m[1])
	if contains(parserProblems, m[2]) {
		line++
	}
	if line == 0 {
		// The library gives no line for these: find the spot.
		if a := unknownAnchorRE().FindStringSubmatch(m[2]); a != nil {
			line = aliasLine(data, a[1])
		} else if strings.Contains(m[2], "UTF-") || strings.Contains(m[2], "control characters") {
			if i := badByte(data); i >= 0 {
				line = bytes.Count(data[:i], []byte("\n")) + 1
			}
		}
	}
	return &Error{Line: line, Msg: "YAML syntax: " + m[2]}
}

// badByte returns the offset of the first byte the YAML reader refuses
// (invalid UTF-8, or a control character other than tab, CR and LF), or
// -1.
func badByte(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f || r >= 0x80 && r < 0xa0 && r != 0x85 || r == 0xfffe || r == 0xffff {
			return i
		}
		i += n
	}
	return -1
}

// aliasLine returns the line of the first "*name" in data, or 0.
func aliasLine(data []byte, name string) int {
	needle := []byte("*" + name)
	for off := 0; ; {
		i := bytes.Index(data[off:], needle)
		if i < 0 || name == "" {
			return 0
		}
		end := off + i + len(needle)
		if end == len(data) || bytes.IndexByte([]byte(" \t\r\n,]}"), data[end]) >= 0 {
			return bytes.Count(data[:off+i], []byte("\n")) + 1
		}
		off = end
	}
}

// decoder walks the node tree, filling a Policy and collecting errors.
type decoder struct {
	errs  ErrorList
	nodes int
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &Error{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
	if len(d.errs) >= maxErrors {
		d.errs = append(d.errs, &Error{Msg: "too many errors; stopped"})
		panic(errTooMany)
	}
}

// visit counts one node against the budget.
func (d *decoder) visit(n *yaml.Node) {
	d.nodes++
	if d.nodes > maxNodes {
		d.errs = append(d.errs, &Error{Line: n.Line, Msg: fmt.Sprintf("the file is too complex (more than %d nodes once aliases are expanded)", maxNodes)})
		panic(errTooMany)
	}
}

// resolve follows aliases. The returned node is never an alias; use the
// original node's line in errors, where the value is used.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	d.visit(n)
	for i := 0; n.Kind == yaml.AliasNode; i++ {
		if n.Alias == nil || i > 100 {
			d.errorf(n, "", "alias *%s cannot be resolved", n.Value)
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line}
		}
		n = n.Alias
		d.visit(n)
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// joinPath appends key to path, quoting keys that are not plain words:
// scopes."deploy:prod".ttl.
func joinPath(path, key string) string {
	plain := key != ""
	for _, c := range key {
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			plain = false
			break
		}
	}
	if !plain {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping walks a mapping node. known lists the accepted keys (nil: any
// key). fn gets each accepted key with its (alias-resolved) value and the
// value's path; line is the line of the original value node. A null node
// is an empty mapping.
func (d *decoder) mapping(n *yaml.Node, path string, known []string, fn func(key string, k, v *yaml.Node, path string)) {
	orig := n
	n = d.resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		what := "must be"
		if path == "" {
			what = "the file must be"
		}
		d.errorf(orig, path, "%s a mapping of keys to values, not %s", what, describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kr := d.resolve(k)
		if kr.Kind != yaml.ScalarNode {
			d.errorf(k, path, "a key must be a plain string, not %s", describe(kr))
			continue
		}
		if kr.ShortTag() == "!!merge" {
			d.errorf(k, path, "merge keys (<<) are not supported; use an alias (*name) for the whole value instead")
			continue
		}
		key := kr.Value
		kp := joinPath(path, key)
		if first, dup := seen[key]; dup {
			d.errorf(k, kp, "defined twice (first on line %d)", first)
			continue
		}
		seen[key] = k.Line
		if known != nil && !contains(known, key) {
			if path == "" && strings.HasPrefix(key, "x-") {
				continue // extension keys: a place for anchors
			}
			msg := "unknown key"
			if s := suggest(key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			} else {
				msg += " (known: " + strings.Join(known, ", ") + ")"
			}
			d.errorf(k, kp, "%s", msg)
			continue
		}
		fn(key, k, v, kp)
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		return strconv.Quote(n.Value)
	}
	return "this"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scalar returns the resolved scalar node, or nil (after an error) when v
// is not a scalar, or nil without an error when it is null (unset).
func (d *decoder) scalar(v *yaml.Node, path string) *yaml.Node {
	r := d.resolve(v)
	if isNull(r) {
		return nil
	}
	if r.Kind != yaml.ScalarNode {
		d.errorf(v, path, "must be a single value, not %s", describe(r))
		return nil
	}
	return r
}

func (d *decoder) str(v *yaml.Node, path string) (string, bool) {
	r := d.scalar(v, path)
	if r == nil {
		return "", false
	}
	switch r.ShortTag() {
	case "!!str", "!!int", "!!float":
		return r.Value, true
	}
	d.errorf(v, path, "must be a string, not %s", describe(r))
	return "", false
}

func (d *decoder) boolean(v *yaml.Node, path string) (*bool, bool) {
	r := d.scalar(v, path)
	if r == nil {
		return nil, false
	}
	if r.ShortTag() == "!!bool" {
		b, err := strconv.ParseBool(strings.ToLower(r.Value))
		if err == nil {
			return &b, true
		}
	}
	d.errorf(v, path, "%s is not a boolean (use true or false)", describe(r))
	return nil, false
}

func (d *decoder) integer(v *yaml.Node, path string) (int, bool) {
	r := d.scalar(v, path)
	if r == nil {
		return 0, false
	}
	if r.ShortTag() == "!!int" {
		var i int
		if err := r.Decode(&i); err == nil {
			return i, true
		}
	}
	d.errorf(v, path, "%s is not a whole number", describe(r))
	return 0, false
}

func (d *decoder) duration(v *yaml.Node, path string) (Duration, bool) {
	r := d.scalar(v, path)
	if r == nil {
		return 0, false
	}
	dur, err := parseDuration(r.Value)
	if err != nil {
		d.errorf(v, path, "%v", err)
		return 0, false
	}
	return dur, true
}

// list returns the string items of a sequence; a single string is a list
// of one.
func (d *decoder) list(v *yaml.Node, path string, check func(item string, n *yaml.Node, path string) bool) ([]string, bool) {
	r := d.resolve(v)
	if isNull(r) {
		return nil, false
	}
	if r.Kind == yaml.ScalarNode {
		s, ok := d.str(v, path)
		if !ok || !check(s, v, path) {
			return nil, false
		}
		return []string{s}, true
	}
	if r.Kind != yaml.SequenceNode {
		d.errorf(v, path, "must be a list, not %s", describe(r))
		return nil, false
	}
	if len(r.Content) == 0 {
		d.errorf(v, path, "empty list: leave the key out to allow any")
		return nil, false
	}
	out := make([]string, 0, len(r.Content))
	seen := make(map[string]bool, len(r.Content))
	good := true
	for i, item := range r.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		s, ok := d.str(item, ip)
		if !ok {
			if isNull(d.resolve(item)) {
				d.errorf(item, ip, "empty item")
			}
			good = false
			continue
		}
		if !check(s, item, ip) {
			good = false
			continue
		}
		if seen[s] {
			d.errorf(item, ip, "%q is listed twice", s)
			good = false
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out, good
}

// oneOf checks an enumerated string.
func (d *decoder) oneOf(v *yaml.Node, path string, allowed []string) (string, bool) {
	s, ok := d.str(v, path)
	if !ok {
		return "", false
	}
	if !contains(allowed, s) {
		msg := fmt.Sprintf("%q is not one of %s", s, strings.Join(allowed, ", "))
		if sg := suggest(s, allowed); sg != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", sg)
		}
		d.errorf(v, path, "%s", msg)
		return "", false
	}
	return s, true
}

var (
	topKeys         = []string{"unknownScopes", "scopes", "prompt", "limits", "lockOnSleep", "delivery", "externalJwt", "builtinScopes", "allowReauthWithMfa", "remote", "audit", "fingerprint"}
	scopeKeys       = []string{"required", "ttl", "singleUse", "methods", "clients", "bind", "proofOfPossession"}
	remoteKeys      = []string{"scopes", "methods"}
	promptKeys      = []string{"driver", "timeout", "combine", "order"}
	fingerprintKeys = []string{"timeout", "maxTries"}
	limitsKeys      = []string{"maxFailures", "window"}
	auditKeys       = []string{"maxSize", "keep", "compress"}
	deliveryKeys    = []string{"smtp", "sms"}
	smtpKeys        = []string{"host", "port", "tls", "from", "username"}
	smsKeys         = []string{"webhook", "format", "from"}
	externalJwtKeys = []string{"jwks", "subject", "issuer", "audience"}

	unknownScopesValues = []string{UnknownRequire, UnknownDeny, UnknownAllow}
	smtpTLSValues       = []string{"starttls", "tls", "none"}
	smsFormats          = []string{"json", "twilio"}
	popValues           = []string{PoPRequired, PoPOptional}
)

func bindValues() []string {
	out := make([]string, len(peer.Modes))
	for i, m := range peer.Modes {
		out[i] = string(m)
	}
	return out
}

func (d *decoder) policy(root *yaml.Node, p *Policy) {
	d.mapping(root, "", topKeys, func(key string, k, v *yaml.Node, path string) {
		switch key {
		case "unknownScopes":
			p.UnknownScopes, _ = d.oneOf(v, path, unknownScopesValues)
		case "scopes":
			d.scopes(v, path, p)
		case "prompt":
			d.prompt(v, path, &p.Prompt)
		case "limits":
			d.limits(v, path, &p.Limits)
		case "lockOnSleep":
			p.LockOnSleep, _ = d.boolean(v, path)
		case "builtinScopes":
			p.BuiltinScopes, _ = d.boolean(v, path)
		case "allowReauthWithMfa":
			if b, ok := d.boolean(v, path); ok {
				p.AllowReauthWithMfa = *b
			}
		case "delivery":
			d.mapping(v, path, deliveryKeys, func(key string, k, v *yaml.Node, path string) {
				switch key {
				case "smtp":
					p.Delivery.SMTP = d.smtp(k, v, path)
				case "sms":
					p.Delivery.SMS = d.sms(k, v, path)
				}
			})
		case "externalJwt":
			p.ExternalJwt = d.externalJwt(k, v, path)
		case "remote":
			p.Remote = d.remote(v, path)
		case "audit":
			d.audit(v, path, &p.Audit)
		case "fingerprint":
			d.fingerprint(v, path, &p.Fingerprint)
		}
	})
}

// remote parses the remote key: scopes (names or patterns) and methods.
func (d *decoder) remote(v *yaml.Node, path string) *Remote {
	r := &Remote{}
	d.mapping(v, path, remoteKeys, func(key string, k, v *yaml.Node, path string) {
		switch key {
		case "scopes":
			r.Scopes, _ = d.list(v, path, func(s string, n *yaml.Node, path string) bool {
				if err := checkScopeName(s); err != nil {
					d.errorf(n, path, "%q: %v", s, err)
					return false
				}
				return true
			})
		case "methods":
			r.Methods, _ = d.list(v, path, d.checkMethod)
		}
	})
	return r
}

// checkMethod checks a method name of a methods list.
func (d *decoder) checkMethod(m string, n *yaml.Node, path string) bool {
	if api.KnownMethod(m) {
		return true
	}
	known := append(append(append([]string{}, api.MFAMethods...), api.ReauthMethods...), api.ExternalJWT)
	msg := fmt.Sprintf("unknown method %q", m)
	if sg := suggest(m, known); sg != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", sg)
	} else {
		msg += " (known: " + strings.Join(known, ", ") + ")"
	}
	d.errorf(n, path, "%s", msg)
	return false
}

func (d *decoder) scopes(v *yaml.Node, path string, p *Policy) {
	d.mapping(v, path, nil, func(name string, k, v *yaml.Node, path string) {
		if err := checkScopeName(name); err != nil {
			d.errorf(v, path, "%v", err)
			return
		}
		var s Scope
		d.mapping(v, path, scopeKeys, func(key string, k, v *yaml.Node, path string) {
			switch key {
			case "required":
				s.Required, _ = d.boolean(v, path)
			case "singleUse":
				s.SingleUse, _ = d.boolean(v, path)
			case "ttl":
				if t, ok := d.duration(v, path); ok {
					switch {
					case t <= 0:
						d.errorf(v, path, "%s: a token's life must be more than 0", t)
					case t.D() > MaxTTL:
						d.errorf(v, path, "%s: a token's life may be at most 24h", t)
					default:
						s.TTL = t
					}
				}
			case "methods":
				s.Methods, _ = d.list(v, path, func(m string, n *yaml.Node, path string) bool {
					// external_jwt is no prompt method, but listing it
					// lets requestExternalAuthElevatedToken mint the
					// scope when a methods list is given.
					if !api.KnownMethod(m) {
						known := append(append(append([]string{}, api.MFAMethods...), api.ReauthMethods...), api.ExternalJWT)
						msg := fmt.Sprintf("unknown method %q", m)
						if sg := suggest(m, known); sg != "" {
							msg += fmt.Sprintf(" (did you mean %s?)", sg)
						} else {
							msg += " (known: " + strings.Join(known, ", ") + ")"
						}
						d.errorf(n, path, "%s", msg)
						return false
					}
					return true
				})
			case "bind":
				if b, ok := d.oneOf(v, path, bindValues()); ok {
					s.Bind = peer.Mode(b)
				}
			case "proofOfPossession":
				s.ProofOfPossession, _ = d.oneOf(v, path, popValues)
			case "clients":
				s.Clients, _ = d.list(v, path, func(c string, n *yaml.Node, path string) bool {
					switch {
					case !filepath.IsAbs(c):
						d.errorf(n, path, "%q is not an absolute path: clients are executables named by their full path", c)
						return false
					case filepath.Clean(c) != c:
						d.errorf(n, path, "%q is not a clean path (did you mean %s?)", c, filepath.Clean(c))
						return false
					}
					return true
				})
			}
		})
		if p.Scopes == nil {
			p.Scopes = map[string]Scope{}
		}
		p.Scopes[name] = s
	})
}

// checkScopeName checks a scope entry's name: a scope (CheckScope) or a
// pattern with `*`.
func checkScopeName(name string) error {
	if err := CheckScope(strings.ReplaceAll(name, "*", "x")); err != nil {
		return fmt.Errorf("not a scope name or pattern: %v", err)
	}
	return nil
}

func (d *decoder) prompt(v *yaml.Node, path string, pr *Prompt) {
	d.mapping(v, path, promptKeys, func(key string, k, v *yaml.Node, path string) {
		switch key {
		case "driver":
			pr.Driver, _ = d.oneOf(v, path, Drivers)
		case "timeout":
			if t, ok := d.duration(v, path); ok {
				if t.D() < MinPromptTimeout || t.D() > MaxPromptTimeout {
					d.errorf(v, path, "%s: the prompt timeout must be between 1s and 10m", t)
					return
				}
				pr.Timeout = t
			}
		case "combine":
			pr.Combine, _ = d.boolean(v, path)
		case "order":
			pr.Order, _ = d.list(v, path, func(m string, n *yaml.Node, path string) bool {
				if !api.IsMFA(m) {
					msg := fmt.Sprintf("%q is not an MFA method (order lists MFA methods: %s)", m, strings.Join(api.MFAMethods, ", "))
					if sg := suggest(m, api.MFAMethods); sg != "" {
						msg = fmt.Sprintf("%q is not an MFA method (did you mean %s?)", m, sg)
					}
					d.errorf(n, path, "%s", msg)
					return false
				}
				return true
			})
		}
	})
}

func (d *decoder) fingerprint(v *yaml.Node, path string, f *Fingerprint) {
	d.mapping(v, path, fingerprintKeys, func(key string, k, v *yaml.Node, path string) {
		switch key {
		case "timeout":
			if t, ok := d.duration(v, path); ok {
				if t.D() < time.Second || t.D() > MaxPromptTimeout {
					d.errorf(v, path, "%s: the fingerprint timeout must be between 1s and 10m", t)
					return
				}
				f.Timeout = t
			}
		case "maxTries":
			if n, ok := d.integer(v, path); ok {
				if n < 1 || n > 10 {
					d.errorf(v, path, "%d: must be from 1 to 10", n)
					return
				}
				f.MaxTries = n
			}
		}
	})
}

func (d *decoder) limits(v *yaml.Node, path string, l *Limits) {
	d.mapping(v, path, limitsKeys, func(key string, k, v *yaml.Node, path string) {
		switch key {
		case "maxFailures":
			if n, ok := d.integer(v, path); ok {
				if n < 1 || n > 1000000 {
					d.errorf(v, path, "%d: must be at least 1 (and at most 1000000)", n)
					return
				}
				l.MaxFailures = n
			}
		case "window":
			if t, ok := d.duration(v, path); ok {
				if t <= 0 {
					d.errorf(v, path, "%s: the window must be more than 0", t)
					return
				}
				l.Window = t
			}
		}
	})
}

func (d *decoder) audit(v *yaml.Node, path string, a *Audit) {
	d.mapping(v, path, auditKeys, func(key string, k, v *yaml.Node, path string) {
		switch key {
		case "maxSize":
			s, ok := d.str(v, path)
			if !ok {
				return
			}
			n, err := parseSize(s)
			if err != nil || n < 4096 {
				d.errorf(v, path, "%q: a size of at least 4KiB, in bytes or with KiB, MiB or GiB (8MiB)", s)
				return
			}
			a.MaxSize = n
		case "keep":
			if n, ok := d.integer(v, path); ok {
				if n < 0 {
					d.errorf(v, path, "%d: the number of rotated files to keep (0 keeps all)", n)
					return
				}
				a.Keep = n
			}
		case "compress":
			a.Compress, _ = d.boolean(v, path)
		}
	})
}

// parseSize reads 8388608, 512KiB, 8MiB, 1GiB.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if t, ok := strings.CutSuffix(s, suf); ok {
			s, mult = strings.TrimSpace(t), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size")
	}
	return n * mult, nil
}

func (d *decoder) smtp(keyNode, v *yaml.Node, path string) *SMTP {
	s := &SMTP{}
	set := map[string]bool{}
	d.mapping(v, path, smtpKeys, func(key string, k, v *yaml.Node, path string) {
		set[key] = true
		switch key {
		case "host":
			if h, ok := d.str(v, path); ok {
				if h == "" || strings.ContainsAny(h, " /:@") && net.ParseIP(h) == nil {
					d.errorf(v, path, "%q is not a host name or IP address", h)
					return
				}
				s.Host = h
			}
		case "port":
			if n, ok := d.integer(v, path); ok {
				if n < 1 || n > 65535 {
					d.errorf(v, path, "%d is not a port (1 to 65535)", n)
					return
				}
				s.Port = n
			}
		case "tls":
			s.TLS, _ = d.oneOf(v, path, smtpTLSValues)
		case "from":
			if f, ok := d.str(v, path); ok {
				if _, err := mail.ParseAddress(f); err != nil {
					d.errorf(v, path, "%q is not an email address", f)
					return
				}
				s.From = f
			}
		case "username":
			s.Username, _ = d.str(v, path)
		}
	})
	if r := d.resolve(v); r.Kind != yaml.MappingNode {
		if isNull(r) {
			return nil
		}
		return s // the error is reported
	}
	if !set["host"] {
		d.errorf(keyNode, joinPath(path, "host"), "missing: email_otp needs the mail server's host name")
	}
	if !set["from"] {
		d.errorf(keyNode, joinPath(path, "from"), "missing: email_otp needs the address the codes come from")
	}
	if s.TLS == "" {
		s.TLS = "starttls"
	}
	if s.TLS == "none" && s.Host != "" && !isLoopback(s.Host) {
		d.errorf(keyNode, joinPath(path, "tls"), "none sends codes in clear text: allowed only for a loopback host (a local relay), not %q", s.Host)
	}
	if s.Port == 0 && !set["port"] {
		switch s.TLS {
		case "tls":
			s.Port = 465
		case "none":
			s.Port = 25
		default:
			s.Port = 587
		}
	}
	return s
}

func (d *decoder) sms(keyNode, v *yaml.Node, path string) *SMS {
	s := &SMS{}
	set := map[string]bool{}
	d.mapping(v, path, smsKeys, func(key string, k, v *yaml.Node, path string) {
		set[key] = true
		switch key {
		case "webhook":
			if w, ok := d.str(v, path); ok {
				if err := checkWebhook(w); err != nil {
					d.errorf(v, path, "%v", err)
					return
				}
				s.Webhook = w
			}
		case "format":
			s.Format, _ = d.oneOf(v, path, smsFormats)
		case "from":
			s.From, _ = d.str(v, path)
		}
	})
	if r := d.resolve(v); r.Kind != yaml.MappingNode {
		if isNull(r) {
			return nil
		}
		return s // the error is reported
	}
	if !set["webhook"] {
		d.errorf(keyNode, joinPath(path, "webhook"), "missing: sms_otp needs the webhook's URL")
	}
	if s.Format == "" {
		s.Format = "json"
	}
	if s.Format == "twilio" && !set["from"] {
		d.errorf(keyNode, joinPath(path, "from"), "missing: the twilio format needs the sending number")
	}
	return s
}

// checkWebhook accepts an https URL, or http to a loopback host (a local
// relay), without credentials (they live in the keychain).
func checkWebhook(w string) error {
	u, err := url.Parse(w)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an https URL", redactURL(w))
	}
	if u.User != nil {
		return fmt.Errorf("%q carries credentials: keep the webhook's token in the keychain, not in the policy", redactURL(w))
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("%q: the webhook must be https (http only for loopback hosts)", redactURL(w))
	}
	return nil
}

// redactURL keeps a password that sits in a URL out of error messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "…" + s[i:]
		}
		return s
	}
	return u.Redacted()
}

func (d *decoder) externalJwt(keyNode, v *yaml.Node, path string) ExternalJwt {
	var e ExternalJwt
	set := map[string]bool{}
	d.mapping(v, path, externalJwtKeys, func(key string, k, v *yaml.Node, path string) {
		set[key] = true
		switch key {
		case "jwks":
			if j, ok := d.str(v, path); ok {
				if err := checkJWKS(j); err != nil {
					d.errorf(v, path, "%v", err)
					return
				}
				e.JWKS = j
			}
		case "subject":
			e.Subject, _ = d.str(v, path)
		case "issuer":
			e.Issuer, _ = d.str(v, path)
		case "audience":
			e.Audience, _ = d.str(v, path)
		}
	})
	if r := d.resolve(v); r.Kind == yaml.MappingNode && len(r.Content) > 0 {
		if !set["jwks"] {
			d.errorf(keyNode, joinPath(path, "jwks"), "missing: requestExternalAuthElevatedToken needs the backend's JWKS (a file or an https URL)")
		}
		if !set["subject"] || e.Subject == "" {
			d.errorf(keyNode, joinPath(path, "subject"), "missing: the user (sub) the backend's assertions must name")
		}
	}
	return e
}

// checkJWKS accepts an absolute file path or an https URL; http only for
// a loopback host (tests).
func checkJWKS(j string) error {
	if filepath.IsAbs(j) {
		return nil
	}
	u, err := url.Parse(j)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q is neither an absolute file path nor an https URL", redactURL(j))
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("%q: the JWKS must come over https (http only for loopback hosts)", redactURL(j))
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// suggest returns the known word closest to s when it is close enough to
// be a typo, or "".
func suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if strings.EqualFold(s, k) {
			return k
		}
		if len(s) >= 3 && (strings.HasPrefix(strings.ToLower(s), strings.ToLower(k)) || strings.HasPrefix(strings.ToLower(k), strings.ToLower(s))) && bestD > 1 {
			best, bestD = k, 2
			continue
		}
		limit := 2
		if len(k) <= 4 {
			limit = 1
		}
		if dist := levenshtein(strings.ToLower(s), strings.ToLower(k)); dist <= limit && dist < bestD {
			best, bestD = k, dist
		}
	}
	return best
}

func levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30 // no typo of a short key; bound the work
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
