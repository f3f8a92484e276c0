package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(t *testing.T, p *Policy)
	}{
		{"empty", "", func(t *testing.T, p *Policy) { samePolicy(t, p, Default()) }},
		{"comments only", "# nothing here\n\n# at all\n", func(t *testing.T, p *Policy) { samePolicy(t, p, Default()) }},
		{"empty document", "---\n", func(t *testing.T, p *Policy) { samePolicy(t, p, Default()) }},
		{"null document", "~\n", func(t *testing.T, p *Policy) { samePolicy(t, p, Default()) }},
		{"trailing document markers", "unknownScopes: deny\n---\n...\n---\n# end\n", func(t *testing.T, p *Policy) {
			if p.UnknownScopes != UnknownDeny {
				t.Error(p.UnknownScopes)
			}
		}},
		{"empty mapping", "{}\n", func(t *testing.T, p *Policy) { samePolicy(t, p, Default()) }},
		{"design example", designExample, func(t *testing.T, p *Policy) {
			s := p.Scopes["deploy:prod"]
			if s.TTL.D() != 2*time.Minute || !*s.SingleUse || strings.Join(s.Methods, ",") != "totp,passkey" || s.Clients[0] != "/usr/local/bin/deployctl" {
				t.Errorf("deploy:prod = %+v", s)
			}
			if *p.Scopes["docs:read"].Required {
				t.Error("docs:read required")
			}
			if p.Prompt.Timeout.D() != time.Minute || p.Limits.MaxFailures != 5 || p.Limits.Window.D() != 15*time.Minute {
				t.Errorf("globals %+v %+v", p.Prompt, p.Limits)
			}
			if p.Delivery.SMTP.Port != 587 || p.Delivery.SMTP.TLS != "starttls" || p.Delivery.SMS.Format != "json" {
				t.Errorf("delivery %+v %+v", p.Delivery.SMTP, p.Delivery.SMS)
			}
			if p.ExternalJwt.Subject != "alice" {
				t.Errorf("externalJwt %+v", p.ExternalJwt)
			}
		}},
		{"null scope entry", "scopes:\n  docs:read:\n", func(t *testing.T, p *Policy) {
			if _, ok := p.Scopes["docs:read"]; !ok || !p.Resolve("docs:read").Known {
				t.Error("a null entry should name the scope")
			}
		}},
		{"external_jwt method", "scopes: {deploy:prod: {methods: [passkey, external_jwt]}}", func(t *testing.T, p *Policy) {
			if r := p.Resolve("deploy:prod"); !r.AllowsMethod("external_jwt") || r.AllowsMethod("totp") {
				t.Errorf("rule %+v", r)
			}
		}},
		{"single method as string", "scopes: {a: {methods: totp}}", func(t *testing.T, p *Policy) {
			if got := p.Scopes["a"].Methods; len(got) != 1 || got[0] != "totp" {
				t.Errorf("methods %v", got)
			}
		}},
		{"alias and x- key", "x-m: &m [totp, passkey]\nscopes:\n  a: {methods: *m}\n  b: {methods: *m}\n", func(t *testing.T, p *Policy) {
			if len(p.Scopes["b"].Methods) != 2 {
				t.Errorf("b %v", p.Scopes["b"])
			}
		}},
		{"smtp none loopback", "delivery: {smtp: {host: 127.0.0.1, from: a@b.c, tls: none}, sms: {webhook: 'http://LocalHost:8080/sms'}}", func(t *testing.T, p *Policy) {
			if p.Delivery.SMTP.Port != 25 || p.Delivery.SMS.Format != "json" {
				t.Errorf("%+v %+v", p.Delivery.SMTP, p.Delivery.SMS)
			}
		}},
		{"smtp port from tls", "delivery: {smtp: {host: h, from: a@b.c, tls: tls}}", func(t *testing.T, p *Policy) {
			if p.Delivery.SMTP.Port != 465 {
				t.Errorf("port %d", p.Delivery.SMTP.Port)
			}
		}},
		{"loopback jwks", "externalJwt: {jwks: 'http://127.0.0.1:8080/jwks', subject: u}", nil},
		{"https jwks", "externalJwt: {jwks: 'https://backend.example.com/.well-known/jwks.json', subject: u}", nil},
		{"localhost jwks", "externalJwt: {jwks: 'http://localhost/jwks', subject: u}", nil},
		{"ipv6 loopback jwks", "externalJwt: {jwks: 'http://[::1]:9/jwks', subject: u}", nil},
		{"twilio", "delivery: {sms: {webhook: 'https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json', format: twilio, from: '+15550100'}}", nil},
		{"bools", "lockOnSleep: false\nbuiltinScopes: false\nallowReauthWithMfa: true\n", func(t *testing.T, p *Policy) {
			if p.LocksOnSleep() || *p.BuiltinScopes || !p.AllowReauthWithMfa {
				t.Errorf("%+v", p)
			}
		}},
		{"audit", "audit: {maxSize: 512KiB, keep: 3, compress: false}", func(t *testing.T, p *Policy) {
			if p.Audit.MaxSize != 512<<10 || p.Audit.Keep != 3 || *p.Audit.Compress {
				t.Errorf("%+v", p.Audit)
			}
		}},
		{"limits bounds", "limits: {maxFailures: 1, window: 1ns}\nprompt: {timeout: 10m}\nscopes: {a: {ttl: 24h}}", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func samePolicy(t *testing.T, got, want *Policy) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("policy\n got %s\nwant %s", g, w)
	}
}

// TestParseErrors pins the exact text, line included, of each error.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // the errors, in order
	}{
		{"bad ttl", "unknownScopes: require\nscopes:\n  docs:read:\n    required: false\n  deploy:prod:\n    singleUse: true\n    ttl: 2x\n",
			[]string{`line 7: scopes."deploy:prod".ttl: "2x" is not a duration (use 90s, 2m, 1h)`}},
		{"bare number ttl", "scopes:\n  a:\n    ttl: 120\n", []string{`line 3: scopes.a.ttl: "120" is not a duration (use 90s, 2m, 1h)`}},
		{"zero ttl", "scopes:\n  a:\n    ttl: 0s\n", []string{`line 3: scopes.a.ttl: 0s: a token's life must be more than 0`}},
		{"negative ttl", "scopes:\n  a: {ttl: -1m}\n", []string{`line 2: scopes.a.ttl: -1m0s: a token's life must be more than 0`}},
		{"long ttl", "scopes:\n\n  a: {ttl: 25h}\n", []string{`line 3: scopes.a.ttl: 25h0m0s: a token's life may be at most 24h`}},
		{"unknown top key", "unknownScope: deny\n", []string{`line 1: unknownScope: unknown key (did you mean unknownScopes?)`}},
		{"unknown key no suggestion", "\nfrobnicate: 1\n", []string{`line 2: frobnicate: unknown key (known: unknownScopes, scopes, prompt, limits, lockOnSleep, delivery, externalJwt, builtinScopes, allowReauthWithMfa, remote, audit, fingerprint)`}},
		{"case typo", "lockonsleep: true\n", []string{`line 1: lockonsleep: unknown key (did you mean lockOnSleep?)`}},
		{"unknown scope key", "scopes:\n  \"wallet:*\":\n    singleuse: true\n    tll: 2m\n", []string{
			`line 3: scopes."wallet:*".singleuse: unknown key (did you mean singleUse?)`,
			`line 4: scopes."wallet:*".tll: unknown key (did you mean ttl?)`}},
		{"unknownScopes value", "unknownScopes: alow\n", []string{`line 1: unknownScopes: "alow" is not one of require, deny, allow (did you mean allow?)`}},
		{"unknownScopes case", "unknownScopes: Deny\n", []string{`line 1: unknownScopes: "Deny" is not one of require, deny, allow (did you mean deny?)`}},
		{"methods", "scopes:\n  a:\n    methods:\n      - totp\n      - pasky\n      - external_jwt\n      - webauthn\n      - totp\n      - external-jwt\n", []string{
			`line 5: scopes.a.methods[1]: unknown method "pasky" (did you mean passkey?)`,
			`line 7: scopes.a.methods[3]: unknown method "webauthn" (known: totp, passkey, recovery_code, fingerprint, email_otp, sms_otp, wallet, password, external_jwt)`,
			`line 8: scopes.a.methods[4]: "totp" is listed twice`,
			`line 9: scopes.a.methods[5]: unknown method "external-jwt" (did you mean external_jwt?)`}},
		{"empty methods", "scopes:\n  a:\n    methods: []\n", []string{`line 3: scopes.a.methods: empty list: leave the key out to allow any`}},
		{"methods mapping", "scopes:\n  a:\n    methods: {totp: 1}\n", []string{`line 3: scopes.a.methods: must be a list, not a mapping`}},
		{"clients", "scopes:\n  a:\n    clients: [deployctl, /usr/bin/../bin/x, ~/bin/y]\n", []string{
			`line 3: scopes.a.clients[0]: "deployctl" is not an absolute path: clients are executables named by their full path`,
			`line 3: scopes.a.clients[1]: "/usr/bin/../bin/x" is not a clean path (did you mean /usr/bin/x?)`,
			`line 3: scopes.a.clients[2]: "~/bin/y" is not an absolute path: clients are executables named by their full path`}},
		{"scope name with space", "scopes:\n  \"a b\": {}\n", []string{`line 2: scopes."a b": not a scope name or pattern: scope contains ' ': use printable ASCII without spaces`}},
		{"scope name empty", "scopes:\n  \"\": {}\n", []string{`line 2: scopes."": not a scope name or pattern: empty scope`}},
		{"scopes list", "scopes:\n  - a\n", []string{`line 2: scopes: must be a mapping of keys to values, not a list`}},
		{"scope scalar", "scopes:\n  a: yes\n", []string{`line 2: scopes.a: must be a mapping of keys to values, not "yes"`}},
		{"yes is not a bool", "lockOnSleep: yes\n", []string{`line 1: lockOnSleep: "yes" is not a boolean (use true or false)`}},
		{"required string", "scopes: {a: {required: \"false\"}}", []string{`line 1: scopes.a.required: "false" is not a boolean (use true or false)`}},
		{"prompt", "prompt:\n  driver: pinentr\n  timeout: 500ms\n", []string{
			`line 2: prompt.driver: "pinentr" is not one of auto, pinentry, zenity, osascript, terminal, none (did you mean pinentry?)`,
			`line 3: prompt.timeout: 500ms: the prompt timeout must be between 1s and 10m`}},
		{"prompt timeout long", "prompt:\n  timeout: 11m\n", []string{`line 2: prompt.timeout: 11m0s: the prompt timeout must be between 1s and 10m`}},
		{"limits", "limits:\n  maxFailures: 0\n  window: 0s\n", []string{
			`line 2: limits.maxFailures: 0: must be at least 1 (and at most 1000000)`,
			`line 3: limits.window: 0s: the window must be more than 0`}},
		{"limits float", "limits:\n  maxFailures: 2.5\n", []string{`line 2: limits.maxFailures: "2.5" is not a whole number`}},
		{"smtp", "delivery:\n  smtp:\n    host: smtp.example.com\n    port: 0\n    tls: ssl\n    from: not-an-address\n", []string{
			`line 4: delivery.smtp.port: 0 is not a port (1 to 65535)`,
			`line 5: delivery.smtp.tls: "ssl" is not one of starttls, tls, none`,
			`line 6: delivery.smtp.from: "not-an-address" is not an email address`}},
		{"smtp missing", "delivery:\n  smtp:\n    port: 65536\n", []string{
			`line 2: delivery.smtp.host: missing: email_otp needs the mail server's host name`,
			`line 2: delivery.smtp.from: missing: email_otp needs the address the codes come from`,
			`line 3: delivery.smtp.port: 65536 is not a port (1 to 65535)`}},
		{"sms", "delivery:\n  sms:\n    webhook: ftp://sms.example.com/\n    format: xml\n", []string{
			`line 3: delivery.sms.webhook: "ftp://sms.example.com/" is not an https URL`,
			`line 4: delivery.sms.format: "xml" is not one of json, twilio`}},
		{"sms password in url", "delivery:\n  sms:\n    webhook: https://user:hunter2@sms.example.com/\n", []string{
			`line 3: delivery.sms.webhook: "https://user:xxxxx@sms.example.com/" carries credentials: keep the webhook's token in the keychain, not in the policy`}},
		{"sms http", "delivery:\n  sms:\n    webhook: http://sms.example.com/\n", []string{
			`line 3: delivery.sms.webhook: "http://sms.example.com/": the webhook must be https (http only for loopback hosts)`}},
		{"smtp tls none", "delivery:\n  smtp: {host: smtp.example.com, from: a@b.c, tls: none}\n", []string{
			`line 2: delivery.smtp.tls: none sends codes in clear text: allowed only for a loopback host (a local relay), not "smtp.example.com"`}},
		{"twilio needs from", "delivery:\n  sms:\n    webhook: https://sms.example.com/\n    format: twilio\n", []string{
			`line 2: delivery.sms.from: missing: the twilio format needs the sending number`}},
		{"jwks http", "externalJwt:\n  jwks: http://backend.example.com/jwks\n  subject: u\n", []string{
			`line 2: externalJwt.jwks: "http://backend.example.com/jwks": the JWKS must come over https (http only for loopback hosts)`}},
		{"jwks relative", "externalJwt:\n  jwks: jwks.json\n  subject: u\n", []string{
			`line 2: externalJwt.jwks: "jwks.json" is neither an absolute file path nor an https URL`}},
		{"jwks missing", "externalJwt:\n  subject: alice\n", []string{
			`line 1: externalJwt.jwks: missing: requestExternalAuthElevatedToken needs the backend's JWKS (a file or an https URL)`}},
		{"subject missing", "externalJwt:\n  jwks: /etc/stepup/jwks.json\n", []string{
			`line 1: externalJwt.subject: missing: the user (sub) the backend's assertions must name`}},
		{"duplicate key", "scopes:\n  a: {}\n  b: {}\n  a: {}\n", []string{`line 4: scopes.a: defined twice (first on line 2)`}},
		{"merge key", "x-base: &b {ttl: 2m}\nscopes:\n  a:\n    <<: *b\n", []string{`line 4: scopes.a: merge keys (<<) are not supported; use an alias (*name) for the whole value instead`}},
		{"alias at use site", "x-t: &t 2x\nscopes:\n  a:\n    ttl: *t\n", []string{`line 4: scopes.a.ttl: "2x" is not a duration (use 90s, 2m, 1h)`}},
		{"top list", "- a\n- b\n", []string{`line 1: the file must be a mapping of keys to values, not a list`}},
		{"top scalar", "hello\n", []string{`line 1: the file must be a mapping of keys to values, not "hello"`}},
		{"two documents", "unknownScopes: deny\n---\nunknownScopes: allow\n", []string{`line 2: a second YAML document (---): a policy file holds one`}},
		{"syntax", "scopes:\n  a: {ttl: 2m\n", []string{`line 2: YAML syntax: did not find expected ',' or '}'`}},
		{"syntax at end", "scopes: {a: 1\n", []string{`line 2: YAML syntax: did not find expected ',' or '}'`}},
		{"bad key indent", "scopes:\n  a: {}\n b: {}\n", []string{`line 3: YAML syntax: did not find expected key`}},
		{"unknown anchor", "scopes:\n  a: *nope\n", []string{`line 2: YAML syntax: unknown anchor 'nope' referenced`}},
		{"invalid utf-8", "scopes:\n  a: {}\n  \xff: {}\n", []string{`line 3: YAML syntax: invalid leading UTF-8 octet`}},
		{"control character", "unknownScopes: deny\nscopes:\n  a\x00b: {}\n", []string{`line 3: YAML syntax: control characters are not allowed`}},
		{"tab indent", "scopes:\n\ta: {}\n", []string{`line 2: YAML syntax: found character that cannot start any token`}},
		{"order by line", "limits: {window: 0s}\nprompt: {driver: x}\n", []string{
			`line 1: limits.window: 0s: the window must be more than 0`,
			`line 2: prompt.driver: "x" is not one of auto, pinentry, zenity, osascript, terminal, none`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", p)
			}
			if p != nil {
				t.Error("Parse returned a policy with an error")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %T is not an ErrorList", err)
			}
			var got []string
			for _, e := range list {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tt.want, "\n      "))
			}
			if err.Error() != strings.Join(tt.want, "; ") {
				t.Errorf("Error() = %q", err.Error())
			}
			var one *Error
			if !errors.As(err, &one) || one != list[0] {
				t.Error("errors.As does not find the first *Error")
			}
		})
	}
}

func TestParseSecretNotEchoed(t *testing.T) {
	_, err := Parse([]byte("delivery: {sms: {webhook: 'https://u:s3cretpass@h/'}}"))
	if err == nil || strings.Contains(err.Error(), "s3cretpass") {
		t.Fatalf("error %v", err)
	}
}

func TestParseTooManyErrors(t *testing.T) {
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, "k%d: 1\n", i)
	}
	_, err := Parse([]byte(b.String()))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatal(err)
	}
	if len(list) != maxErrors+1 || list[len(list)-1].Msg != "too many errors; stopped" || list[0].Line != 1 {
		t.Errorf("%d errors, last %v", len(list), list[len(list)-1])
	}
}

func TestParseBounds(t *testing.T) {
	t.Run("too big", func(t *testing.T) {
		data := []byte("# " + strings.Repeat("x", MaxFileSize) + "\n")
		_, err := Parse(data)
		if err == nil || !strings.Contains(err.Error(), "may be at most 1048576") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("alias bomb", func(t *testing.T) {
		// Each level doubles; the last level names 2^40 strings.
		var b strings.Builder
		b.WriteString("x-0: &a0 [totp, totp]\n")
		for i := 1; i <= 40; i++ {
			fmt.Fprintf(&b, "x-%d: &a%d [*a%d, *a%d]\n", i, i, i-1, i-1)
		}
		b.WriteString("scopes:\n")
		for i := range 100 {
			fmt.Fprintf(&b, "  s%d: {methods: *a40}\n", i)
		}
		start := time.Now()
		_, err := Parse([]byte(b.String()))
		if err == nil {
			t.Fatal("alias bomb accepted")
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("took %v", time.Since(start))
		}
	})
	t.Run("node budget", func(t *testing.T) {
		// 10,000 distinct clients, used by 200 scopes: 2,000,000 nodes.
		var b strings.Builder
		b.WriteString("x-c: &c\n")
		for i := range 10000 {
			fmt.Fprintf(&b, "  - /bin/c%d\n", i)
		}
		b.WriteString("scopes:\n")
		for i := range 200 {
			fmt.Fprintf(&b, "  s%d: {clients: *c}\n", i)
		}
		_, err := Parse([]byte(b.String()))
		if err == nil || !strings.Contains(err.Error(), "the file is too complex (more than 1048576 nodes once aliases are expanded)") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("alias bomb of scopes", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("x-0: &a0 {ttl: 2m}\n")
		b.WriteString("scopes:\n")
		for i := range 20000 {
			fmt.Fprintf(&b, "  s%d: *a0\n", i)
		}
		for i := range 60 {
			fmt.Fprintf(&b, "x-l%d: &l%d [*a0, *a0, *a0, *a0]\n", i, i)
		}
		if _, err := Parse([]byte(b.String())); err != nil {
			t.Fatalf("a file of many small aliases should parse: %v", err)
		}
	})
	t.Run("large files are quick", func(t *testing.T) {
		size := MaxFileSize
		if raceEnabled {
			size /= 4 // still enough to show a quadratic step
		}
		var b strings.Builder
		b.WriteString("scopes:\n  a:\n    clients:\n")
		for i := 0; b.Len() < size-100; i++ {
			fmt.Fprintf(&b, "      - /bin/c%d\n", i)
		}
		many := b.String()
		b.Reset()
		b.WriteString("scopes:\n")
		for i := 0; b.Len() < size-100; i++ {
			fmt.Fprintf(&b, "  \"s%d*\": {ttl: 1m}\n", i)
		}
		patterns := b.String()
		docs := "{}\n" + strings.Repeat("---\n", (size-10)/4)
		for name, in := range map[string]string{"clients": many, "patterns": patterns, "documents": docs} {
			start := time.Now()
			p, err := Parse([]byte(in))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			p.Resolve("s1")
			// About 0.25s each here; a quadratic step would take
			// minutes. The race detector (and a busy machine) slow
			// it down tenfold.
			limit := 5 * time.Second
			if raceEnabled {
				limit = 60 * time.Second
			}
			if d := time.Since(start); d > limit {
				t.Errorf("%s: %v", name, d)
			}
		}
	})
	t.Run("self alias", func(t *testing.T) {
		_, err := Parse([]byte("scopes: &s\n  a: *s\n"))
		if err == nil {
			t.Fatal("accepted")
		}
	})
	t.Run("deep nesting", func(t *testing.T) {
		_, err := Parse([]byte(strings.Repeat("[", 20000) + strings.Repeat("]", 20000)))
		if err == nil {
			t.Fatal("accepted")
		}
		_, err = Parse([]byte("scopes:\n  a:\n    methods: " + strings.Repeat("[", 5000) + strings.Repeat("]", 5000)))
		if err == nil {
			t.Fatal("accepted")
		}
	})
}

func TestDurationCodecs(t *testing.T) {
	var s struct {
		T Duration `yaml:"t"`
	}
	if err := yaml.Unmarshal([]byte("t: 90s"), &s); err != nil || s.T.D() != 90*time.Second {
		t.Fatalf("yaml: %v %v", s.T, err)
	}
	if err := yaml.Unmarshal([]byte("\n\nt: 2x"), &s); err == nil || !strings.Contains(err.Error(), `line 3: "2x" is not a duration (use 90s, 2m, 1h)`) {
		t.Fatalf("yaml error: %v", err)
	}
	if err := yaml.Unmarshal([]byte("t: [1]"), &s); err == nil {
		t.Fatal("yaml list accepted")
	}
	out, err := yaml.Marshal(s)
	if err != nil || string(out) != "t: 1m30s\n" {
		t.Fatalf("yaml marshal %q %v", out, err)
	}
	b, err := json.Marshal(Duration(2 * time.Minute))
	if err != nil || string(b) != `"2m0s"` {
		t.Fatalf("json %s %v", b, err)
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"2m0s"`), &d); err != nil || d.D() != 2*time.Minute {
		t.Fatalf("json string %v %v", d, err)
	}
	if err := json.Unmarshal([]byte(`1.5`), &d); err != nil || d.D() != 1500*time.Millisecond {
		t.Fatalf("json seconds %v %v", d, err)
	}
	for _, bad := range []string{`"2x"`, `true`, `1e300`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("json %s accepted", bad)
		}
	}
}

// TestPolicyJSONRoundTrip: the policy as status shows it reads back.
func TestPolicyJSONRoundTrip(t *testing.T) {
	p, err := Parse([]byte(designExample))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var q Policy
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatal(err)
	}
	if q.Scopes["deploy:prod"].TTL.D() != 2*time.Minute || q.Prompt.Timeout.D() != time.Minute {
		t.Errorf("round trip %s", b)
	}
	if r := q.Resolve("wallet:sign"); r.TTL != 10*time.Minute {
		t.Errorf("resolve after round trip %+v", r)
	}
}

// designExample is the policy of DESIGN.md, verbatim.
const designExample = `unknownScopes: require        # require | deny | allow
scopes:
  docs:read:
    required: false
  deploy:prod:
    ttl: 2m
    singleUse: true
    methods: [totp, passkey]
    clients: [/usr/local/bin/deployctl]
  "wallet:*":
    ttl: 10m
prompt:
  driver: auto                 # as --prompter
  timeout: 60s
limits:
  maxFailures: 5               # per method, within window, then locked out
  window: 15m
lockOnSleep: true
delivery:                      # for email_otp and sms_otp
  smtp: {host: smtp.example.com, port: 587, tls: starttls, from: stepup@example.com, username: me}
  sms: {webhook: https://sms.example.com/send}
externalJwt:                   # for requestExternalAuthElevatedToken
  jwks: /etc/stepup/backend-jwks.json   # a file or an https URL
  subject: alice
`
