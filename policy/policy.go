// Package policy holds the agent's policy: which scopes need step-up, for
// how long a token lives, single or multi use, which methods and clients
// may be used, and the global settings (prompt, limits, lock on sleep,
// delivery, external JWT). docs/policy.md documents every key.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stepup-agent/stepup-agent/peer"
)

// Unknown-scope decisions.
const (
	UnknownRequire = "require"
	UnknownDeny    = "deny"
	UnknownAllow   = "allow"
)

// Defaults of the global settings.
const (
	DefaultSingleUseTTL  = 5 * time.Minute
	DefaultMultiUseTTL   = 10 * time.Minute
	DefaultPromptTimeout = 60 * time.Second
	DefaultMaxFailures   = 5
	DefaultWindow        = 15 * time.Minute
)

// Policy is a parsed, validated policy file (or the built-in defaults).
type Policy struct {
	UnknownScopes string           `yaml:"unknownScopes" json:"unknownScopes"`
	Scopes        map[string]Scope `yaml:"scopes" json:"scopes"`
	Prompt        Prompt           `yaml:"prompt" json:"prompt"`
	Limits        Limits           `yaml:"limits" json:"limits"`
	LockOnSleep   *bool            `yaml:"lockOnSleep" json:"lockOnSleep"`
	Delivery      Delivery         `yaml:"delivery" json:"delivery"`
	ExternalJwt   ExternalJwt      `yaml:"externalJwt" json:"externalJwt"`
	Audit         Audit            `yaml:"audit" json:"audit"`
	Fingerprint   Fingerprint      `yaml:"fingerprint" json:"fingerprint"`

	// Extensions.

	// BuiltinScopes false drops the built-in Dynamic scopes; by default
	// the file's scopes are laid over them.
	BuiltinScopes *bool `yaml:"builtinScopes" json:"builtinScopes,omitempty"`
	// AllowReauthWithMfa lets re-authentication methods mint tokens even
	// while an MFA credential is enrolled (the seed refuses that).
	AllowReauthWithMfa bool `yaml:"allowReauthWithMfa" json:"allowReauthWithMfa"`
	// Remote is what callers through the remote socket may do; nil is
	// the default (every scope but credential:*, every method).
	Remote *Remote `yaml:"remote" json:"remote,omitempty"`

	// patterns holds the names of the `*` entries of Scopes, least
	// specific first; set by Parse. A Policy built by hand (nil
	// patterns) sorts them in every Resolve.
	patterns []string
}

// Scope is one entry of scopes: an exact scope name or a `*` pattern.
// Unset fields inherit from less specific entries.
type Scope struct {
	Required  *bool    `yaml:"required" json:"required,omitempty"`
	TTL       Duration `yaml:"ttl" json:"ttl,omitempty"`
	SingleUse *bool    `yaml:"singleUse" json:"singleUse,omitempty"`
	Methods   []string `yaml:"methods" json:"methods,omitempty"`
	Clients   []string `yaml:"clients" json:"clients,omitempty"`
	// Bind is the scope's binding (process, client, session, user);
	// empty inherits, and in the end means client.
	Bind peer.Mode `yaml:"bind" json:"bind,omitempty"`
	// ProofOfPossession is required or optional (the default): required
	// never mints the scope without a cnf key (4005).
	ProofOfPossession string `yaml:"proofOfPossession" json:"proofOfPossession,omitempty"`
}

// Values of proofOfPossession.
const (
	PoPRequired = "required"
	PoPOptional = "optional"
)

// Remote is the remote key: the scopes (names or patterns) and methods
// callers through the remote socket may use. A nil list is the default.
type Remote struct {
	Scopes  []string `yaml:"scopes" json:"scopes,omitempty"`
	Methods []string `yaml:"methods" json:"methods,omitempty"`
}

// RemoteAllowsScope reports whether a caller through the remote socket
// may use scope: one of remote.scopes (exact or pattern), or without
// that list any scope but credential:* (enrolling and removing
// credentials stays local).
func (p *Policy) RemoteAllowsScope(scope string) bool {
	if p.Remote == nil || p.Remote.Scopes == nil {
		return !strings.HasPrefix(scope, "credential:")
	}
	for _, pat := range p.Remote.Scopes {
		if Match(pat, scope) {
			return true
		}
	}
	return false
}

// RemoteAllowsMethod reports whether a caller through the remote socket
// may be verified by method m (default: any).
func (p *Policy) RemoteAllowsMethod(m string) bool {
	if p.Remote == nil || p.Remote.Methods == nil {
		return true
	}
	return slices.Contains(p.Remote.Methods, m)
}

// Prompt is the prompt section.
type Prompt struct {
	Driver  string   `yaml:"driver" json:"driver"`
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// Combine (default true) offers every usable MFA factor in one
	// prompt: a code is read while the fingerprint verification runs.
	Combine *bool `yaml:"combine" json:"combine,omitempty"`
	// Order is the order of preference of MFA methods (the default
	// factor, and the order a combined prompt names them in); methods
	// it leaves out follow in the built-in order.
	Order []string `yaml:"order" json:"order,omitempty"`
}

// Combines reports whether prompts offer several factors at once.
func (p Prompt) Combines() bool { return p.Combine == nil || *p.Combine }

// Fingerprint is the fingerprint section: how one fprintd verification
// runs.
type Fingerprint struct {
	// Timeout bounds one verification (default 30s).
	Timeout Duration `yaml:"timeout" json:"timeout,omitempty"`
	// MaxTries is how many no-matches end one verification (default 3).
	MaxTries int `yaml:"maxTries" json:"maxTries,omitempty"`
}

// Limits is the limits section: after MaxFailures failures of one method
// within Window, the method is locked out until Window has passed.
type Limits struct {
	MaxFailures int      `yaml:"maxFailures" json:"maxFailures"`
	Window      Duration `yaml:"window" json:"window"`
}

// Audit is the audit section: the log rotates when its file reaches
// MaxSize bytes (default 8 MiB); Keep rotated files are kept (0: all);
// Compress (default true) gzips them (docs/audit.md).
type Audit struct {
	MaxSize  int64 `yaml:"maxSize" json:"maxSize,omitempty"`
	Keep     int   `yaml:"keep" json:"keep,omitempty"`
	Compress *bool `yaml:"compress" json:"compress,omitempty"`
}

// Delivery configures email_otp and sms_otp.
type Delivery struct {
	SMTP *SMTP `yaml:"smtp" json:"smtp,omitempty"`
	SMS  *SMS  `yaml:"sms" json:"sms,omitempty"`
}

// SMTP is the mail server for email_otp. The password, if any, lives in
// the keychain, never in the policy.
type SMTP struct {
	Host     string `yaml:"host" json:"host"`
	Port     int    `yaml:"port" json:"port"`
	TLS      string `yaml:"tls" json:"tls"` // starttls | tls | none
	From     string `yaml:"from" json:"from"`
	Username string `yaml:"username" json:"username"`
}

// SMS is the webhook for sms_otp.
type SMS struct {
	Webhook string `yaml:"webhook" json:"webhook"`
	Format  string `yaml:"format" json:"format"` // json (default) | twilio
	From    string `yaml:"from" json:"from"`
}

// ExternalJwt configures requestExternalAuthElevatedToken.
type ExternalJwt struct {
	JWKS     string `yaml:"jwks" json:"jwks"` // a file or an https URL
	Subject  string `yaml:"subject" json:"subject"`
	Issuer   string `yaml:"issuer" json:"issuer"`
	Audience string `yaml:"audience" json:"audience"`
}

// Rule is the effective setting for one scope, after patterns, the file
// and the built-in defaults are applied.
type Rule struct {
	Scope     string
	Known     bool // named by an entry (exact or pattern)
	Denied    bool // unknown and unknownScopes: deny, or fails CheckScope
	Required  bool
	TTL       time.Duration
	SingleUse bool
	Methods   []string  // empty: any
	Clients   []string  // empty: any
	Bind      peer.Mode // never empty: peer.DefaultMode unless set
	// ProofRequired: the scope is never minted without a cnf key.
	ProofRequired bool
}

func boolp(b bool) *bool { return &b }

// Built-in scopes, mirroring Dynamic's: single use for five minutes for
// the destructive ones, multi use for ten minutes for the others.
var (
	builtinSingleUse = []string{"wallet:export", "wallet:delete", "wallet:restore", "credential:unlink", "user:delete"}
	builtinMultiUse  = []string{"wallet:sign", "wallet:delegate", "credential:link", "credential:update", "user:update"}
	// builtinPatterns are the administrative scopes, single use for five
	// minutes like the destructive ones. Resolve lays them below the
	// exact built-in entries.
	builtinPatterns = []string{"business_account:*", "console:*"}
)

// builtinScopes is built once, on first use (not at init: stepupctl
// links this package and most of its runs never resolve a scope):
// Resolve runs on every isStepUpRequired the agent has not cached.
var builtinScopes = sync.OnceValue(builtin)

// builtin mirrors Dynamic's scopes. It returns a fresh map.
func builtin() map[string]Scope {
	s := map[string]Scope{}
	for _, n := range builtinSingleUse {
		s[n] = Scope{Required: boolp(true), SingleUse: boolp(true), TTL: Duration(DefaultSingleUseTTL)}
	}
	for _, n := range builtinMultiUse {
		s[n] = Scope{Required: boolp(true), SingleUse: boolp(false), TTL: Duration(DefaultMultiUseTTL)}
	}
	for _, n := range builtinPatterns {
		s[n] = Scope{Required: boolp(true), SingleUse: boolp(true), TTL: Duration(DefaultSingleUseTTL)}
	}
	return s
}

// Builtin returns the built-in scope entries (a fresh map each call).
func Builtin() map[string]Scope { return builtin() }

// Default returns the built-in policy used when no file exists.
func Default() *Policy {
	p := &Policy{}
	p.fill()
	return p
}

// fill sets the defaults of unset global settings.
func (p *Policy) fill() {
	if p.UnknownScopes == "" {
		p.UnknownScopes = UnknownRequire
	}
	if p.Prompt.Driver == "" {
		p.Prompt.Driver = "auto"
	}
	if p.Prompt.Timeout == 0 {
		p.Prompt.Timeout = Duration(DefaultPromptTimeout)
	}
	if p.Limits.MaxFailures == 0 {
		p.Limits.MaxFailures = DefaultMaxFailures
	}
	if p.Limits.Window == 0 {
		p.Limits.Window = Duration(DefaultWindow)
	}
	if p.LockOnSleep == nil {
		p.LockOnSleep = boolp(true)
	}
}

// LocksOnSleep reports the lockOnSleep setting (default true).
func (p *Policy) LocksOnSleep() bool { return p.LockOnSleep == nil || *p.LockOnSleep }

// Match reports whether scope matches pattern, where `*` matches any run
// of characters (including none) and everything else matches itself.
// It does not allocate: it runs on every isStepUpRequired.
func Match(pattern, scope string) bool {
	first, rest, found := strings.Cut(pattern, "*")
	if !found {
		return pattern == scope
	}
	if !strings.HasPrefix(scope, first) {
		return false
	}
	scope = scope[len(first):]
	for {
		mid, next, more := strings.Cut(rest, "*")
		if !more {
			// rest is the last part: it must end the scope.
			return strings.HasSuffix(scope, rest)
		}
		// Leftmost match of each middle part leaves the most room
		// for the parts after it.
		i := strings.Index(scope, mid)
		if i < 0 {
			return false
		}
		scope = scope[i+len(mid):]
		rest = next
	}
}

// CheckScope reports whether name is a valid scope to ask for: not empty,
// at most 256 bytes, printable ASCII without spaces (the token's `scope`
// claim is space-delimited) and without `*` (patterns belong in the
// policy, not in requests). Resolve denies scopes that fail it.
func CheckScope(name string) error {
	if name == "" {
		return errors.New("empty scope")
	}
	if len(name) > MaxScopeLen {
		return fmt.Errorf("scope longer than %d bytes", MaxScopeLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '*':
			return errors.New("scope contains *: patterns are for the policy file, ask for a concrete scope")
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("scope contains %q: use printable ASCII without spaces", c)
		}
	}
	return nil
}

// MaxScopeLen is the longest scope name accepted.
const MaxScopeLen = 256

// lessSpecific orders patterns: more literal (non-`*`) characters is more
// specific; on a tie fewer `*` is more specific; then byte order, so that
// the order never depends on map iteration.
func lessSpecific(a, b string) bool {
	sa, sb := strings.Count(a, "*"), strings.Count(b, "*")
	la, lb := len(a)-sa, len(b)-sb
	if la != lb {
		return la < lb
	}
	if sa != sb {
		return sa > sb
	}
	return a < b
}

// sortPatterns returns the pattern entries of scopes, least specific
// first.
func sortPatterns(scopes map[string]Scope) []string {
	var pats []string
	for name := range scopes {
		if strings.Contains(name, "*") {
			pats = append(pats, name)
		}
	}
	sort.Slice(pats, func(i, j int) bool { return lessSpecific(pats[i], pats[j]) })
	return pats
}

// Resolve returns the effective rule for scope. Entries apply from least
// to most specific, each set field overriding: the built-in scopes (unless
// builtinScopes: false), then the file's matching patterns (fewest
// literal characters first), then the file's exact entry.
//
// A scope no entry names is unknown: unknownScopes decides whether it is
// denied, allowed without step-up, or (the default) required, and when
// required it gets the strictest settings, single use for five minutes.
func (p *Policy) Resolve(scope string) Rule {
	var buf [8]Scope
	layers := buf[:0]
	if p.BuiltinScopes == nil || *p.BuiltinScopes {
		for _, n := range builtinPatterns {
			if Match(n, scope) {
				layers = append(layers, builtinScopes()[n])
			}
		}
		if s, ok := builtinScopes()[scope]; ok && !strings.Contains(scope, "*") {
			layers = append(layers, s)
		}
	}
	pats := p.patterns
	if pats == nil && len(p.Scopes) > 0 {
		pats = sortPatterns(p.Scopes)
	}
	for _, n := range pats {
		if Match(n, scope) {
			layers = append(layers, p.Scopes[n])
		}
	}
	if s, ok := p.Scopes[scope]; ok && !strings.Contains(scope, "*") {
		layers = append(layers, s)
	}
	r := Rule{Scope: scope, Known: len(layers) > 0, Required: true}
	if CheckScope(scope) != nil {
		// Never hand out a token for a malformed scope.
		return Rule{Scope: scope, Denied: true, Required: true, SingleUse: true, TTL: DefaultSingleUseTTL, Bind: peer.Process}
	}
	var ttl time.Duration
	singleUse := false
	if !r.Known {
		switch p.UnknownScopes {
		case UnknownDeny:
			r.Denied = true
		case UnknownAllow:
			r.Required = false
		}
		// Unknown scopes that require step-up get the strictest
		// settings: single use, five minutes.
		singleUse = true
	}
	for _, l := range layers {
		if l.Required != nil {
			r.Required = *l.Required
		}
		if l.TTL != 0 {
			ttl = l.TTL.D()
		}
		if l.SingleUse != nil {
			singleUse = *l.SingleUse
		}
		if l.Methods != nil {
			r.Methods = slices.Clone(l.Methods)
		}
		if l.Clients != nil {
			r.Clients = slices.Clone(l.Clients)
		}
		if l.Bind != "" {
			r.Bind = l.Bind
		}
		if l.ProofOfPossession != "" {
			r.ProofRequired = l.ProofOfPossession == PoPRequired
		}
	}
	if r.Bind == "" {
		r.Bind = peer.DefaultMode
	}
	r.SingleUse = singleUse
	if ttl == 0 {
		ttl = DefaultMultiUseTTL
		if singleUse {
			ttl = DefaultSingleUseTTL
		}
	}
	r.TTL = ttl
	return r
}

// AllowsMethod reports whether the rule lets method m be used.
func (r Rule) AllowsMethod(m string) bool {
	if len(r.Methods) == 0 {
		return true
	}
	for _, x := range r.Methods {
		if x == m {
			return true
		}
	}
	return false
}

// AllowsClient reports whether the rule lets the executable exe use it.
func (r Rule) AllowsClient(exe string) bool {
	if len(r.Clients) == 0 {
		return true
	}
	for _, c := range r.Clients {
		if c == exe {
			return true
		}
	}
	return false
}
