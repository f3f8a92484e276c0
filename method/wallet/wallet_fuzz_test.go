package wallet

import (
	"strings"
	"testing"
)

// FuzzRecoverAddress: any message and signature a client sends recover an
// address or an error, never a panic; an address recovered is in EIP-55
// form (ParseAddress gives it back unchanged). Seeds: below and
// testdata/fuzz/FuzzRecoverAddress.
func FuzzRecoverAddress(f *testing.F) {
	sig := "0x" + strings.Repeat("11", 32) + strings.Repeat("22", 32) + "1b"
	f.Add("localhost wants you to sign in with your Ethereum account:\n0x0000000000000000000000000000000000000000\n", sig)
	f.Add("", "0x")
	f.Add("m", "0X"+strings.Repeat("ff", 65))
	f.Add("m", " 0x"+strings.Repeat("00", 64)+"00 ")
	f.Add("m", "0x"+strings.Repeat("7f", 32)+strings.Repeat("ff", 32)+"1c")
	f.Fuzz(func(t *testing.T, msg, sig string) {
		addr, err := recoverAddress(msg, sig)
		if err != nil {
			if addr != "" {
				t.Fatalf("an address %q with an error %v", addr, err)
			}
			return
		}
		if back, err := ParseAddress(addr); err != nil || back != addr {
			t.Fatalf("recovered %q, which ParseAddress reads as %q, %v", addr, back, err)
		}
	})
}

// FuzzParseAddress: an address ParseAddress accepts is canonical: parsing
// its result again gives the same.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0x", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED", "0xZZ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		b, err := ParseAddress(a)
		if err != nil || a != b {
			t.Fatalf("%q -> %q -> %q, %v", s, a, b, err)
		}
		if len(a) != 42 || !strings.HasPrefix(a, "0x") {
			t.Fatalf("%q -> %q: not a 0x address", s, a)
		}
	})
}
