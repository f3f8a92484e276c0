package api

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDetailsRefuses(t *testing.T) {
	long := `[{"type":"x","v":"` + strings.Repeat("a", MaxDetailsBytes) + `"}]`
	nine := "[" + strings.Repeat(`{"type":"x"},`, 8) + `{"type":"x"}]`
	for _, tc := range []struct{ in, reason string }{
		{`{"type":"x"}`, "array"},
		{`[]`, "empty array"},
		{`[1]`, "not an object"},
		{`[{"a":1}]`, `no "type"`},
		{`[{"type":1}]`, "non-empty string"},
		{`[{"type":""}]`, "non-empty string"},
		{`[{"type":"x","n":{"a":1}}]`, "flat"},
		{`[{"type":"x","n":[1]}]`, "flat"},
		{`[{"type":"x","n":null}]`, "null"},
		{`[{"type":"x","a":1,"a":2}]`, "twice"},
		{`[{"type":"x","":1}]`, "empty key"},
		{`[{"type":"x","n":1e999}]`, "out of range"},
		{`[{"type":"x"}] [1]`, "not valid JSON"},
		{`[{"type":"x"`, "not valid JSON"},
		{"[{\"type\":\"\xff\"}]", "UTF-8"},
		{long, "at most 2048"},
		{nine, "more than 8"},
	} {
		d, err := ParseDetails(RawDetails(tc.in))
		var ae *Error
		if d != nil || !errors.As(err, &ae) || ae.Code != CodeInvalidParams {
			t.Errorf("ParseDetails(%.40s) = %v, %v; want -32602", tc.in, d, err)
			continue
		}
		if !strings.Contains(ae.Message, tc.reason) || !strings.HasPrefix(ae.Message, "authorizationDetails: ") {
			t.Errorf("ParseDetails(%.40s): message %q does not say %q", tc.in, ae.Message, tc.reason)
		}
		if ae.Data.Hint == "" {
			t.Errorf("ParseDetails(%.40s): no hint", tc.in)
		}
	}
	for _, absent := range []string{"", "null", " null "} {
		if d, err := ParseDetails(RawDetails(absent)); d != nil || err != nil {
			t.Errorf("ParseDetails(%q) = %v, %v; want absent", absent, d, err)
		}
	}
	eight := "[" + strings.Repeat(`{"type":"x"},`, 7) + `{"type":"x"}]`
	if _, err := ParseDetails(RawDetails(eight)); err != nil {
		t.Errorf("8 entries refused: %v", err)
	}
}

func TestDetailsEquality(t *testing.T) {
	a := `[{"type":"wallet_export","address":"0x12ab","amount":5,"ok":true}]`
	for _, tc := range []struct {
		b    string
		want bool
	}{
		{a, true},
		{` [ { "address" : "0x12ab", "type":"wallet_export", "ok":true, "amount":5.0 } ] `, true},
		{`[{"type":"wallet_export","address":"0x12AB","amount":5,"ok":true}]`, false},
		{`[{"type":"wallet_export","address":"0x12ab","amount":5}]`, false},
		{`[{"type":"wallet_export","address":"0x12ab","amount":"5","ok":true}]`, false},
		{`[{"type":"wallet_export","address":"0x12ab","amount":5,"ok":true},{"type":"x"}]`, false},
		{``, false},
	} {
		if got := DetailsEqual(RawDetails(a), RawDetails(tc.b)); got != tc.want {
			t.Errorf("DetailsEqual(a, %s) = %v, want %v", tc.b, got, tc.want)
		}
	}
	// Order of entries matters.
	if DetailsEqual(RawDetails(`[{"type":"a"},{"type":"b"}]`), RawDetails(`[{"type":"b"},{"type":"a"}]`)) {
		t.Error("entries in another order are equal")
	}
	if !DetailsEqual(nil, RawDetails("null")) {
		t.Error("absent does not equal absent")
	}
	d, _ := ParseDetails(RawDetails(` [ {"type": "x" , "b":1} ] `))
	if string(d.Raw()) != `[{"type":"x","b":1}]` {
		t.Errorf("Raw = %s; want the compact JSON, keys in the order sent", d.Raw())
	}
}

func TestDetailsLinesSanitized(t *testing.T) {
	d, err := ParseDetails(RawDetails(`[{"type":"wallet_export","address":"0x12ab"},{"type":"pay\u202e","to":"bob\nApprove: all","note":"","x\u200by":"a, b"}]`))
	if err != nil {
		t.Fatal(err)
	}
	lines := d.Lines()
	want := []string{`wallet_export: address 0x12ab`, `pay: to bobApprove: all, note "", xy "a, b"`}
	if len(lines) != 2 || lines[0] != want[0] {
		t.Fatalf("Lines = %q, want %q", lines, want)
	}
	if lines[1] != `pay: to "bobApprove: all", note "", xy "a, b"` {
		t.Errorf("Lines[1] = %q", lines[1])
	}
	for _, l := range lines {
		if strings.ContainsAny(l, "\n\u202e\u200b") {
			t.Errorf("line %q holds a control or invisible character", l)
		}
	}
}

func TestCnfCheck(t *testing.T) {
	good := &Cnf{JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
	if err := good.Check(); err != nil {
		t.Errorf("good jkt refused: %v", err)
	}
	for _, bad := range []string{"", "abc", good.JKT + "=", strings.Repeat("A", 44)} {
		if err := (&Cnf{JKT: bad}).Check(); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("jkt %q: %v; want -32602", bad, err)
		}
	}
	if !(*Cnf)(nil).Same(nil) || good.Same(nil) || !good.Same(&Cnf{JKT: good.JKT}) {
		t.Error("Same is wrong")
	}
}

func TestCheckCreateMfaToken(t *testing.T) {
	yes := true
	if w, err := CheckCreateMfaToken(nil, nil); w != nil || err != nil {
		t.Error("absent createMfaToken changes something")
	}
	_, err := CheckCreateMfaToken(&yes, nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeInvalidParams || !strings.Contains(ae.Message, "requestedScopes") || !strings.Contains(ae.Data.Hint, "requestedScopes") {
		t.Errorf("createMfaToken alone: %v; want -32602 naming requestedScopes", err)
	}
	if w, err := CheckCreateMfaToken(&yes, []string{"a"}); err != nil || len(w) != 1 || !strings.HasPrefix(w[0], "createMfaToken is deprecated") {
		t.Errorf("createMfaToken beside scopes: %v, %v", w, err)
	}
}

func TestACROf(t *testing.T) {
	for m, want := range map[string]string{TOTP: ACRMFA, Passkey: ACRMFA, RecoveryCode: ACRMFA, Password: ACRReauth, Wallet: ACRReauth, EmailOTP: ACRReauth, ExternalJWT: ACRExternal, "x": ""} {
		if got := ACROf(m); got != want {
			t.Errorf("ACROf(%s) = %q, want %q", m, got, want)
		}
	}
}

func BenchmarkDetailsEqualCanonical(b *testing.B) {
	x, _ := ParseDetails(RawDetails(`[{"type":"wallet_export","address":"0x12ab"}]`))
	y, _ := ParseDetails(RawDetails(`[{"address":"0x12ab","type":"wallet_export"}]`))
	b.ReportAllocs()
	for b.Loop() {
		if !x.Equal(y) {
			b.Fatal("not equal")
		}
	}
}
