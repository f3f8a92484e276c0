package policy

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestDocExample: docs/policy.md shows testdata/example.yaml verbatim, and
// that file parses to the defaults it claims.
func TestDocExample(t *testing.T) {
	ex, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "<!-- example: policy/testdata/example.yaml -->\n```yaml\n"
	_, rest, ok := strings.Cut(string(doc), marker)
	if !ok {
		t.Fatalf("docs/policy.md lacks %q", marker)
	}
	block, _, ok := strings.Cut(rest, "```\n")
	if !ok {
		t.Fatal("the example's code block is not closed")
	}
	if block != string(ex) {
		t.Errorf("docs/policy.md's example differs from policy/testdata/example.yaml: copy the file into the doc")
	}
	p, err := Parse(ex)
	if err != nil {
		t.Fatalf("the documented example does not parse: %v", err)
	}
	d := Default()
	if p.UnknownScopes != d.UnknownScopes || !reflect.DeepEqual(p.Prompt, d.Prompt) || p.Limits != d.Limits ||
		p.LocksOnSleep() != d.LocksOnSleep() || p.AllowReauthWithMfa != d.AllowReauthWithMfa || !*p.BuiltinScopes {
		t.Errorf("the example's global settings are not the defaults: %+v", p)
	}
	// The layering the doc walks through.
	if r := p.Resolve("wallet:export"); !r.SingleUse || r.TTL.Minutes() != 10 || len(r.Methods) != 3 {
		t.Errorf("wallet:export %+v", r)
	}
	if r := p.Resolve("wallet:sign"); r.SingleUse || r.TTL.Minutes() != 10 || r.Methods != nil {
		t.Errorf("wallet:sign %+v", r)
	}
	if r := p.Resolve("deploy:staging"); r.Known || !r.Required || !r.SingleUse || r.TTL.Minutes() != 5 {
		t.Errorf("deploy:staging %+v", r)
	}
	if r := p.Resolve("ci:build"); !r.AllowsMethod("external_jwt") || r.AllowsMethod("totp") || !r.AllowsClient("/usr/local/bin/ci-runner") {
		t.Errorf("ci:build %+v", r)
	}
	// Every key of every section appears in the doc.
	for _, keys := range [][]string{topKeys, scopeKeys, promptKeys, limitsKeys, deliveryKeys, smtpKeys, smsKeys, externalJwtKeys, remoteKeys, auditKeys, fingerprintKeys} {
		for _, k := range keys {
			if !strings.Contains(string(doc), "`"+k+"`") && !strings.Contains(string(doc), "."+k+"`") {
				t.Errorf("docs/policy.md does not document `%s`", k)
			}
		}
	}
}
