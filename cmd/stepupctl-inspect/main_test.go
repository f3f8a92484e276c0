package main

import (
	"testing"

	"github.com/stepup-agent/stepup-agent/internal/ctl"
)

// TestSameVerbsBothWays: stepupctl's --help (its stand-ins for this
// program's verbs) lists what this program runs, with the same
// summaries, and every verb stepupctl hands over has a builder here.
func TestSameVerbsBothWays(t *testing.T) {
	if len(extension.Verbs) != len(ctl.InspectVerbs) {
		t.Errorf("%d verbs built here, %d handed over by stepupctl", len(extension.Verbs), len(ctl.InspectVerbs))
	}
	light, full := map[string]string{}, map[string]string{}
	for _, c := range ctl.Root(nil).Commands() {
		light[c.Name()] = c.Short
	}
	for _, c := range ctl.Root(extension).Commands() {
		full[c.Name()] = c.Short
	}
	for name, short := range full {
		if light[name] != short {
			t.Errorf("%s: stepupctl --help says %q, stepupctl-inspect %q", name, light[name], short)
		}
	}
	if len(light) != len(full) {
		t.Errorf("stepupctl has %d verbs, stepupctl-inspect %d", len(light), len(full))
	}
}
