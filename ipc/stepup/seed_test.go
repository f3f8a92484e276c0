package stepup_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"github.com/stepup-agent/stepup-agent/ipc/stepup/stepuptest"
)

// TestSeedCalls runs the five calls the package documentation starts with
// against a real agent (no prompter: the prompt calls say so, and the
// step-up itself goes through the custom-UI path the examples show).
func TestSeedCalls(t *testing.T) {
	stepuptest.RequireProgram(t, "oathtool")
	a := stepuptest.Start(t, stepuptest.Options{})
	a.EnrollTOTP(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := a.Client
	if !c.IsStepUpRequired(ctx, "wallet:export") {
		t.Fatal("IsStepUpRequired(wallet:export) = false with no token held")
	}
	opts := stepup.PromptOptions{Scopes: []string{"wallet:export"}, Reason: "seed test"}
	if _, err := c.PromptStepUpAuth(ctx, opts); !errors.Is(err, stepup.ErrNoPrompter) {
		t.Errorf("PromptStepUpAuth with no prompter: %v, want ErrNoPrompter", err)
	}
	if _, err := c.PromptMfa(ctx, opts); !errors.Is(err, stepup.ErrNoPrompter) {
		t.Errorf("PromptMfa with no prompter: %v, want ErrNoPrompter", err)
	}
	if _, err := c.PromptReauthenticate(ctx, opts); err == nil {
		t.Error("PromptReauthenticate minted a token while an MFA credential exists")
	}
	if _, err := a.StepUp(ctx, []string{"wallet:export"}); err != nil {
		t.Fatal(err)
	}
	if c.IsStepUpRequired(ctx, "wallet:export") {
		t.Error("IsStepUpRequired(wallet:export) = true with a token held")
	}
	if n, err := c.ResetState(ctx); err != nil || n != 1 {
		t.Errorf("ResetState = %d, %v; want 1", n, err)
	}
	if !c.IsStepUpRequired(ctx, "wallet:export") {
		t.Error("IsStepUpRequired(wallet:export) = false after ResetState")
	}
	unreachable := &stepup.Client{Socket: a.Dir + "/nothing.sock"}
	if !unreachable.IsStepUpRequired(ctx, "docs:read") {
		t.Error("IsStepUpRequired with no agent = false: it must fail closed")
	}
}
