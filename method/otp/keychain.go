package otp

import (
	"context"
	"errors"

	"github.com/stepup-agent/stepup-agent/keychain"
)

// Delivery secrets live in the agent's keychain as items of kind
// KeychainKind. In the Secret Service they carry the attributes
// {service: stepup-agent, kind: delivery, name: smtp-password|sms-token},
// so `secret-tool store --label="stepup-agent SMTP password" service
// stepup-agent kind delivery name smtp-password` sets one.
const (
	KeychainKind     = "delivery"
	ItemSMTPPassword = "smtp-password"
	ItemSMSToken     = "sms-token"
)

// KeychainSecret returns a SecretFunc that reads item name of kind
// KeychainKind from store at each delivery. A missing item is "" (no
// authentication).
func KeychainSecret(store keychain.Store, name string) SecretFunc {
	return func(ctx context.Context) (string, error) {
		if store == nil {
			return "", nil
		}
		b, err := store.Get(ctx, KeychainKind, name)
		if errors.Is(err, keychain.ErrNotFound) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
}
