package passkey

import (
	"encoding/json"
	"testing"

	"github.com/go-webauthn/webauthn/protocol"
)

// FuzzPostBody: the passkey page's POST body (attacker-controlled: any
// local program can post to the page's port) goes through the same gate
// and parsers as in post and the ceremony's finish: json.Valid, then
// go-webauthn's parsers of a registration and of an assertion. None may
// panic; a body they accept has the fields the ceremony then reads.
func FuzzPostBody(f *testing.F) {
	f.Add([]byte(`{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"}}`))
	f.Add([]byte(`{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"AA","signature":"AA","userHandle":"AA"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"","type":"public-key","response":null}`))
	f.Add([]byte(`{"id":"AA","rawId":"AB","type":"public-key","response":{"clientDataJSON":"eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0","authenticatorData":"` + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" + `","signature":"MEUCIQ"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		if p, err := protocol.ParseCredentialCreationResponseBytes(body); err == nil && p == nil {
			t.Fatal("nil registration without error")
		}
		if p, err := protocol.ParseCredentialRequestResponseBytes(body); err == nil && p == nil {
			t.Fatal("nil assertion without error")
		}
	})
}
