// Package policy holds the agent's policy: which scopes need step-up, for
// how long a token lives, single or multi use, which methods and clients
// may be used, and the global settings (prompt, limits, lock on sleep,
// delivery, external JWT). docs/policy.md documents every key.
package policy

import (
	"sort"
	"strings"
	"time"
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

// Duration is a time.Duration written as "2m", "90s" in YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Policy is a parsed, validated policy file (or the built-in defaults).
type Policy struct {
	UnknownScopes string           `yaml:"unknownScopes" json:"unknownScopes"`
	Scopes        map[string]Scope `yaml:"scopes" json:"scopes"`
	Prompt        Prompt           `yaml:"prompt" json:"prompt"`
	Limits        Limits           `yaml:"limits" json:"limits"`
	LockOnSleep   *bool            `yaml:"lockOnSleep" json:"lockOnSleep"`
	Delivery      Delivery         `yaml:"delivery" json:"delivery"`
	ExternalJwt   ExternalJwt      `yaml:"externalJwt" json:"externalJwt"`

	// Extensions.

	// BuiltinScopes false drops the built-in Dynamic scopes; by default
	// the file's scopes are laid over them.
	BuiltinScopes *bool `yaml:"builtinScopes" json:"builtinScopes"`
	// AllowReauthWithMfa lets re-authentication methods mint tokens even
	// while an MFA credential is enrolled (the seed refuses that).
	AllowReauthWithMfa bool `yaml:"allowReauthWithMfa" json:"allowReauthWithMfa"`
}

// Scope is one entry of scopes: an exact scope name or a `*` pattern.
// Unset fields inherit from less specific entries.
type Scope struct {
	Required  *bool    `yaml:"required" json:"required"`
	TTL       Duration `yaml:"ttl" json:"ttl"`
	SingleUse *bool    `yaml:"singleUse" json:"singleUse"`
	Methods   []string `yaml:"methods" json:"methods"`
	Clients   []string `yaml:"clients" json:"clients"`
}

// Prompt is the prompt section.
type Prompt struct {
	Driver  string   `yaml:"driver" json:"driver"`
	Timeout Duration `yaml:"timeout" json:"timeout"`
}

// Limits is the limits section: after MaxFailures failures of one method
// within Window, the method is locked out until Window has passed.
type Limits struct {
	MaxFailures int      `yaml:"maxFailures" json:"maxFailures"`
	Window      Duration `yaml:"window" json:"window"`
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
	Denied    bool // unknown and unknownScopes: deny
	Required  bool
	TTL       time.Duration
	SingleUse bool
	Methods   []string // empty: any
	Clients   []string // empty: any
}

func boolp(b bool) *bool { return &b }

// builtin mirrors Dynamic's scopes.
func builtin() map[string]Scope {
	s := map[string]Scope{}
	for _, n := range []string{"wallet:export", "wallet:delete", "wallet:restore", "credential:unlink", "user:delete"} {
		s[n] = Scope{Required: boolp(true), SingleUse: boolp(true), TTL: Duration(DefaultSingleUseTTL)}
	}
	for _, n := range []string{"wallet:sign", "wallet:delegate", "credential:link", "credential:update", "user:update"} {
		s[n] = Scope{Required: boolp(true), SingleUse: boolp(false), TTL: Duration(DefaultMultiUseTTL)}
	}
	return s
}

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
func Match(pattern, scope string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == scope
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(scope, parts[0]) {
		return false
	}
	scope = scope[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(scope, mid)
		if i < 0 {
			return false
		}
		scope = scope[i+len(mid):]
	}
	return strings.HasSuffix(scope, last)
}

// specificity orders patterns: more literal characters is more specific.
func specificity(pattern string) int { return len(pattern) - strings.Count(pattern, "*")*1000 }

// Resolve returns the effective rule for scope. Entries apply from least
// to most specific, each set field overriding: the built-in scopes (unless
// builtinScopes: false), then the file's patterns (fewest literal
// characters first), then the file's exact entry.
func (p *Policy) Resolve(scope string) Rule {
	var layers []Scope
	if p.BuiltinScopes == nil || *p.BuiltinScopes {
		if s, ok := builtin()[scope]; ok {
			layers = append(layers, s)
		}
	}
	var pats []string
	for name := range p.Scopes {
		if strings.Contains(name, "*") && Match(name, scope) {
			pats = append(pats, name)
		}
	}
	sort.Slice(pats, func(i, j int) bool {
		si, sj := specificity(pats[i]), specificity(pats[j])
		if si != sj {
			return si < sj
		}
		return pats[i] < pats[j]
	})
	for _, n := range pats {
		layers = append(layers, p.Scopes[n])
	}
	if s, ok := p.Scopes[scope]; ok {
		layers = append(layers, s)
	}
	r := Rule{Scope: scope, Known: len(layers) > 0, Required: true}
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
			r.Methods = l.Methods
		}
		if l.Clients != nil {
			r.Clients = l.Clients
		}
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
