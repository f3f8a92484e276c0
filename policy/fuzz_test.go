package policy

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, answers either a policy or a non-empty
// ErrorList, is deterministic, and a policy it returns resolves and
// marshals. The seeds (f.Add below and testdata/fuzz/FuzzParse) run in
// every plain `go test`.
//
// The seeds are small on purpose: the fuzzer minimizes every input that
// finds new coverage (for up to 60 s, trying inputs with ranges of bytes
// cut out, a count that grows with the square of the length), and while it
// minimizes it tries nothing new. With the design example (835 bytes),
// testdata/example.yaml (2 KiB) and a 3.8 KiB nested block among the seeds,
// the children of those seeds took the whole of each minute and the target
// ran at under one new input a second. The large documents are checked by
// TestParseLargeDocuments with the same checks instead.
func FuzzParse(f *testing.F) {
	f.Add([]byte("unknownScopes: require\nscopes:\n  wallet:*:\n    methods: [passkey, totp]\n    ttl: 5m\n    singleUse: true\n"))
	f.Add([]byte(""))
	f.Add([]byte("scopes:\n  deploy:prod:\n    ttl: 2x\n"))
	f.Add([]byte("x-a: &a [totp, *a]\nscopes: {a: {methods: *a}}\n"))
	f.Add([]byte("scopes: &s\n  a: *s\n"))
	f.Add([]byte("{[: ]}"))
	f.Add([]byte("scopes:\n  \"*\":\n    methods: totp\n  \"a*b\": ~\n"))
	f.Add([]byte("delivery: {smtp: {host: '::1', from: '<a@b>', tls: none}, sms: {webhook: 'http://[::1]:1/', format: twilio, from: x}}\nexternalJwt: {jwks: 'https://h/j', subject: s, issuer: i, audience: a}"))
	f.Add([]byte("--- !!map\n? a\n: b\n"))
	f.Add([]byte("limits: {maxFailures: 0x10, window: 1h1m1s1ms}\n"))
	f.Fuzz(checkParse)
}

// TestParseLargeDocuments runs FuzzParse's checks on the documents too
// large to seed the fuzzer with (see FuzzParse).
func TestParseLargeDocuments(t *testing.T) {
	docs := map[string]string{"the design example": designExample}
	for _, name := range []string{"testdata/example.yaml", "testdata/deep_block.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		docs[name] = string(b)
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) { checkParse(t, []byte(doc)) })
	}
	// The nested block (60 levels under an unknown top-level key) is
	// refused with an error, not a panic or a policy.
	if _, err := Parse([]byte(docs["testdata/deep_block.yaml"])); err == nil {
		t.Error("testdata/deep_block.yaml parsed without an error")
	}
}

// checkParse is FuzzParse's property: Parse never panics, answers either a
// policy or a non-empty ErrorList, is deterministic, and a policy it
// returns resolves and marshals.
func checkParse(t *testing.T, data []byte) {
	p, err := Parse(data)
	if err != nil {
		var list ErrorList
		if p != nil || !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("Parse: %v (%T), policy %v", err, err, p != nil)
		}
		for _, e := range list {
			if e.Msg == "" {
				t.Fatalf("empty message in %v", err)
			}
		}
		_, err2 := Parse(data)
		if err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("not deterministic: %v then %v", err, err2)
		}
		return
	}
	if p == nil {
		t.Fatal("nil policy without error")
	}
	if _, err := json.Marshal(p); err != nil {
		t.Fatalf("marshal: %v", err)
	}
	for _, s := range []string{"wallet:export", "docs:read", "deploy:prod", "a", ""} {
		r := p.Resolve(s)
		if r.TTL <= 0 || r.TTL > MaxTTL {
			t.Fatalf("Resolve(%q).TTL = %v", s, r.TTL)
		}
	}
	for name := range p.Scopes {
		if strings.Contains(name, "*") {
			continue
		}
		if r := p.Resolve(name); !r.Known || r.Denied {
			t.Fatalf("Resolve(%q) of a named scope = %+v", name, r)
		}
	}
}

// FuzzMatch checks Match against a regular expression built from the
// pattern.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"wallet:*", "wallet:sign"}, {"a*a", "a"}, {"ab*ba", "aba"}, {"*b*", "abc"},
		{"x*yz*z", "xyzz"}, {"**", ""}, {"a*b*c", "axbxbxc"}, {"*", "*"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, scope string) {
		if len(pattern) > 64 || len(scope) > 256 {
			return
		}
		parts := strings.Split(pattern, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		re, err := regexp.Compile(`(?s)\A` + strings.Join(parts, ".*") + `\z`)
		if err != nil {
			return // invalid UTF-8 and the like: the reference cannot say
		}
		if got, want := Match(pattern, scope), re.MatchString(scope); got != want {
			t.Fatalf("Match(%q, %q) = %v, want %v", pattern, scope, got, want)
		}
	})
}
