package policy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// prompt.combine, prompt.order and the fingerprint section
// (docs/policy.md).
func TestParsePromptFactors(t *testing.T) {
	p, err := Parse([]byte("prompt:\n  combine: false\n  order: [fingerprint, totp]\nfingerprint:\n  timeout: 20s\n  maxTries: 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Prompt.Combines() || !slices.Equal(p.Prompt.Order, []string{"fingerprint", "totp"}) {
		t.Fatalf("prompt %+v", p.Prompt)
	}
	if p.Fingerprint.Timeout.D() != 20*time.Second || p.Fingerprint.MaxTries != 2 {
		t.Fatalf("fingerprint %+v", p.Fingerprint)
	}
	if !Default().Prompt.Combines() {
		t.Fatal("the default does not combine factors")
	}
	for in, want := range map[string]string{
		"prompt:\n  order: [fingerprnt]\n": `"fingerprnt" is not an MFA method (did you mean fingerprint?)`,
		"prompt:\n  order: [password]\n":   `"password" is not an MFA method (order lists MFA methods: totp, passkey, recovery_code, fingerprint)`,
		"fingerprint:\n  maxTries: 0\n":    "must be from 1 to 10",
		"fingerprint:\n  timeout: 0s\n":    "the fingerprint timeout must be between 1s and 10m",
		"prompt:\n  combine: sometimes\n":  "combine",
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}
