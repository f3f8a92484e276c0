//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/internal/ctl"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
)

// What the user approves in a prompt is what the token enforces, so the
// details are never cut to fit pinentry's Assuan line (1000 bytes, the
// description percent-escaped after "SETDESC "): details that fit are
// shown whole by pinentry-tty; details within the protocol's limits
// (2 KiB as JSON) whose prompt would not fit, whether long or only long
// once escaped, are refused with -32602 naming authorizationDetails and
// the limit, before any prompt opens.
func TestBindingE2EDetailsNeverCutFromPinentrysLine(t *testing.T) {
	b := startBindAgent(t)

	// Details that fit: every entry and field on pinentry-tty's screen,
	// '%' included (escaped on the line, shown as typed).
	fit := `[{"type":"wallet_export","address":"0x12ab","memo":"100%-backup"},{"type":"notify","to":"ops@example.com"},{"type":"last_entry","marker":"end-of-details-7f3a"}]`
	tok := b.approveOnTTY(t, []string{"Approve:", "wallet_export: address 0x12ab, memo 100%-backup", "notify: to ops@example.com", "last_entry: marker end-of-details-7f3a", "Method: recovery_code"},
		"--details-json", fit, "t:user")
	c := &stepup.Client{Socket: b.sock}
	if _, err := c.VerifyTokenWith(context.Background(), tok, "t:user", stepup.VerifyOptions{AuthorizationDetails: json.RawMessage(fit)}); err != nil {
		t.Fatalf("the token does not carry the details shown: %v", err)
	}

	// Too long for the line: raw, or only once escaped ('%' is three
	// bytes there). Each is valid details, under 2 KiB of JSON.
	var eight []string
	for i := 0; i < 8; i++ {
		eight = append(eight, fmt.Sprintf(`{"type":"transfer","n":%d,"to":"%s"}`, i, strings.Repeat("b", 180)))
	}
	for name, d := range map[string]string{
		"eight long entries": "[" + strings.Join(eight, ",") + "]",
		"long once escaped":  `[{"type":"wallet_export","address":"0x12ab","memo":"` + strings.Repeat("%", 400) + `"}]`,
	} {
		t.Run(name, func(t *testing.T) {
			if len(d) > 2048 {
				t.Fatalf("the test's details are %d bytes: over the protocol's 2 KiB, not the prompt's line", len(d))
			}
			if _, err := api.ParseDetails(api.RawDetails(d)); err != nil {
				t.Fatalf("the test's details are invalid: %v", err)
			}
			// From the CLI on a terminal, where pinentry-tty would open.
			p := b.startOnTTY([]string{"TERM=xterm", "LANG=C.UTF-8"}, "prompt", "--method", "recovery_code", "--details-json", d, "t:user")
			err := p.wait(t)
			var ee interface{ ExitCode() int }
			if !errors.As(err, &ee) || ee.ExitCode() != ctl.ExitRefused {
				t.Fatalf("stepupctl prompt: %v, want exit %d\n%s", err, ctl.ExitRefused, p.screen())
			}
			screen := p.screen()
			for _, want := range []string{"authorizationDetails", "over the 992 bytes pinentry can show", "nothing is cut"} {
				if !strings.Contains(screen, want) {
					t.Fatalf("the refusal does not say %q:\n%s", want, screen)
				}
			}
			if strings.Contains(screen, "Recovery code:") || strings.Contains(screen, "Approve:") {
				t.Fatalf("a prompt opened for details it cannot show whole:\n%s", screen)
			}

			// On the wire: -32602, invalid_params, from a caller whose
			// prompt would go to a terminal.
			m, tty, err := pty.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			defer tty.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			wc := &stepup.Client{Socket: b.sock, Env: &api.PromptEnv{TTY: tty.Name(), Term: "xterm", Lang: "C.UTF-8"}}
			_, err = wc.PromptStepUpAuth(ctx, stepup.PromptOptions{Scopes: []string{"t:user"}, Method: api.RecoveryCode, AuthorizationDetails: json.RawMessage(d)})
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != api.CodeInvalidParams || ae.Data.Reason != "invalid_params" || !strings.Contains(ae.Message, "authorizationDetails") || !strings.Contains(ae.Message, "992") {
				t.Fatalf("promptStepUpAuth with details over the line: %v, want -32602 naming authorizationDetails and the limit", err)
			}
			t.Logf("%d bytes of details: %s (hint: %s)", len(d), ae.Message, ae.Data.Hint)
		})
	}
}
