package stepup_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// The five calls of the seed's API, in the order a program meets them.
// (These examples need a running agent, so they are compiled, not run;
// TestSeedCalls runs the same calls against a real one.)

func ExampleClient_IsStepUpRequired() {
	ctx := context.Background()
	var c stepup.Client
	// Fails closed: no agent, a broken connection or a denied scope all
	// answer true.
	if c.IsStepUpRequired(ctx, "wallet:export") {
		fmt.Println("step-up needed before the export")
	}
}

func ExampleClient_PromptStepUpAuth() {
	ctx := context.Background()
	var c stepup.Client
	tok, err := c.PromptStepUpAuth(ctx, stepup.PromptOptions{
		Scopes: []string{"wallet:export"},
		Reason: "export wallet 0x12…",
	})
	switch {
	case errors.Is(err, stepup.ErrCancelled):
		fmt.Println("the user said no")
		return
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println("approved with", tok.Method, "until", tok.ExpiresAt)
}

func ExampleClient_PromptMfa() {
	ctx := context.Background()
	var c stepup.Client
	// MFA methods only (totp, passkey, recovery_code); Method picks one.
	if _, err := c.PromptMfa(ctx, stepup.PromptOptions{Scopes: []string{"wallet:sign"}, Method: "totp"}); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_PromptReauthenticate() {
	ctx := context.Background()
	var c stepup.Client
	// Re-authentication methods only (password, email_otp, sms_otp, wallet).
	if _, err := c.PromptReauthenticate(ctx, stepup.PromptOptions{Scopes: []string{"user:update"}}); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_ResetState() {
	ctx := context.Background()
	var c stepup.Client
	n, err := c.ResetState(ctx) // no scopes: every token this caller may reset
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("revoked", n)
}

// A custom UI collects the code itself and answers the agent's challenge.
func ExampleClient_StartVerification() {
	ctx := context.Background()
	var c stepup.Client
	ch, err := c.StartVerification(ctx, "totp", []string{"wallet:export"})
	if err != nil {
		log.Fatal(err)
	}
	code := "123456" // what the user typed into the application's window
	tok, err := c.CompleteVerification(ctx, ch.ChallengeID, map[string]string{"code": code})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.Scopes)
}
