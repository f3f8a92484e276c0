package agent

import (
	"slices"
	"testing"
)

// prompt.order puts the methods it names first; the others keep the
// built-in order, and a named method that is not usable is skipped.
func TestOrderBy(t *testing.T) {
	for _, c := range []struct{ ms, order, want []string }{
		{[]string{"totp", "fingerprint"}, nil, []string{"totp", "fingerprint"}},
		{[]string{"totp", "recovery_code", "fingerprint"}, []string{"fingerprint"}, []string{"fingerprint", "totp", "recovery_code"}},
		{[]string{"totp"}, []string{"passkey", "fingerprint", "totp"}, []string{"totp"}},
		{[]string{"totp", "fingerprint"}, []string{"fingerprint", "fingerprint"}, []string{"fingerprint", "totp"}},
	} {
		if got := orderBy(c.ms, c.order); !slices.Equal(got, c.want) {
			t.Errorf("orderBy(%v, %v) = %v, want %v", c.ms, c.order, got, c.want)
		}
	}
}
