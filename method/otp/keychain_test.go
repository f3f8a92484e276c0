package otp

import (
	"context"
	"testing"

	"github.com/stepup-agent/stepup-agent/keychain"
)

func TestKeychainSecret(t *testing.T) {
	ctx := context.Background()
	store := keychain.NewMemory()
	get := KeychainSecret(store, ItemSMTPPassword)
	if s, err := get(ctx); err != nil || s != "" {
		t.Fatalf("missing item: %q, %v", s, err)
	}
	if err := store.Put(ctx, KeychainKind, ItemSMTPPassword, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	if s, err := get(ctx); err != nil || s != "pw" {
		t.Fatalf("item: %q, %v", s, err)
	}
}
