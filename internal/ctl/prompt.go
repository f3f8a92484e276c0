package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/ipc/stepup"
	"golang.org/x/term"
)

// promptFlags are shared by prompt, exec, token and unlock.
type promptFlags struct {
	mfa, reauth bool
	method      string
	reason      string
	timeout     int
	stdin       bool
	details     detailFlags // prompt, token, exec: the action the token is for
}

func (f *promptFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.mfa, "mfa", false, "verify with an MFA method only (promptMfa)")
	cmd.Flags().BoolVar(&f.reauth, "reauth", false, "verify with a re-authentication method only (promptReauthenticate)")
	cmd.Flags().StringVar(&f.method, "method", "", "the verification method (totp, passkey, recovery_code, fingerprint, password, email_otp, sms_otp, wallet)")
	cmd.Flags().StringVar(&f.reason, "reason", "", "why, shown in the prompt")
	cmd.Flags().IntVar(&f.timeout, "timeout", 0, "seconds to wait for the answer (default: the policy's prompt.timeout)")
	cmd.Flags().BoolVar(&f.stdin, "stdin", false, "read the answer (code, password, signature) from standard input instead of a prompt")
}

func (a *App) promptCmd() *cobra.Command {
	var f promptFlags
	cmd := &cobra.Command{
		Use:   "prompt SCOPE...",
		Short: "Verify the user and have the agent mint a token for SCOPEs",
		Long: `prompt asks the agent to verify the user (promptStepUpAuth; --mfa for
promptMfa, --reauth for promptReauthenticate). The agent shows a native
prompt; where it cannot, stepupctl asks on its own terminal and answers
through startVerification/completeVerification.`,
		Args: minArgs(1, "at least one scope"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.stepUp(cmd.Context(), args, &f)
			if err != nil {
				return err
			}
			if a.JSON {
				return a.PrintJSON(res)
			}
			fmt.Fprintf(a.Stdout, "Stepped up with %s for %s: %s token, valid until %s\n",
				res.Method, strings.Join(res.Scopes, " "), useKind(res.SingleUse), when(res.ExpiresAt))
			return nil
		},
	}
	f.add(cmd)
	f.details.add(cmd)
	return cmd
}

// stepUp verifies the user for scopes: through the agent's prompt, or on
// this terminal when the agent has no way to prompt.
func (a *App) stepUp(ctx context.Context, scopes []string, f *promptFlags) (*stepup.TokenResult, error) {
	if f.mfa && f.reauth {
		return nil, UsageError{errors.New("--mfa and --reauth cannot be used together"), "stepupctl prompt"}
	}
	details, err := f.details.raw()
	if err != nil {
		return nil, err
	}
	if f.stdin {
		return a.stepUpHere(ctx, scopes, f, "")
	}
	o := promptOptions(scopes, f)
	if details != nil {
		o.AuthorizationDetails = details
	}
	var res *stepup.TokenResult
	switch {
	case f.mfa:
		res, err = a.Client.PromptMfa(ctx, o)
	case f.reauth:
		res, err = a.Client.PromptReauthenticate(ctx, o)
	default:
		res, err = a.Client.PromptStepUpAuth(ctx, o)
	}
	if errors.Is(err, api.ErrNoPrompter) && haveTTY() {
		return a.stepUpHere(ctx, scopes, f, "")
	}
	return res, err
}

// pickMethod chooses the method for a verification done here: the
// agent's list for the first scope when it gives one, else the enrolled
// credentials in the agent's order of preference.
func (a *App) pickMethod(ctx context.Context, scopes []string, f *promptFlags) (string, error) {
	if f.method != "" {
		return f.method, nil
	}
	var candidates []string
	if len(scopes) > 0 {
		r, err := a.Client.CheckStepUp(ctx, scopes[0])
		if err != nil {
			return "", err
		}
		candidates = r.Methods
	}
	if len(candidates) == 0 {
		creds, err := a.Client.ListCredentials(ctx)
		if err != nil {
			return "", err
		}
		have := map[string]bool{}
		for _, c := range creds {
			have[c.Method] = true
		}
		mfa := have[api.TOTP] || have[api.Passkey] || have[api.RecoveryCode] || have[api.Fingerprint]
		for _, m := range append(append([]string{}, api.MFAMethods...), api.ReauthMethods...) {
			if have[m] && (api.IsMFA(m) || !mfa) {
				candidates = append(candidates, m)
			}
		}
		if !mfa {
			candidates = append(candidates, api.Password)
		}
	}
	for _, m := range candidates {
		if f.mfa && !api.IsMFA(m) || f.reauth && !api.IsReauth(m) {
			continue
		}
		return m, nil
	}
	if f.reauth {
		return "", api.Errorf(api.CodeForbidden, "no re-authentication method may be used now").
			WithHint("while an MFA credential is enrolled, use --mfa (or allowReauthWithMfa in the policy)")
	}
	return "", api.Errorf(api.CodeNotEnrolled, "no verification method is enrolled").
		WithHint("enroll one with: stepupctl enroll totp")
}

// promptOptions builds the client's prompt options from the flags.
func promptOptions(scopes []string, f *promptFlags) stepup.PromptOptions {
	return stepup.PromptOptions{Scopes: scopes, Method: f.method, Reason: f.reason, Timeout: f.timeout}
}

// stepUpHere runs the custom-UI path: startVerification, ask on this
// terminal (or read stdin with --stdin), completeVerification. purpose is
// "" for a token or "unlock".
func (a *App) stepUpHere(ctx context.Context, scopes []string, f *promptFlags, purpose string) (*stepup.TokenResult, error) {
	m, err := a.pickMethod(ctx, scopes, f)
	if err != nil {
		return nil, err
	}
	details, err := f.details.raw()
	if err != nil {
		return nil, err
	}
	var ch api.Challenge
	sp := api.StartVerificationParams{Method: m, RequestedScopes: scopes, Purpose: purpose}
	sp.AuthorizationDetails = details
	if err := a.Client.Call(ctx, api.MethodStartVerification, sp, &ch); err != nil {
		return nil, err
	}
	var answers *bufio.Reader
	if f.stdin {
		answers = bufio.NewReader(a.Stdin)
	}
	for tries := 0; ; tries++ {
		resp, err := a.askHere(ch, answers, scopes, purpose)
		if err != nil {
			return nil, err
		}
		var res stepup.TokenResult
		var unlocked api.LockResult
		var out any = &res
		if purpose != "" {
			out = &unlocked // an unlock answers {"locked": false}
		}
		err = a.Client.Call(ctx, api.MethodCompleteVerification, api.CompleteVerificationParams{ChallengeID: ch.ChallengeID, Response: resp}, out)
		if err == nil {
			return &res, nil
		}
		var ae *api.Error
		if answers == nil && errors.As(err, &ae) && ae.Code == api.CodeVerificationFailed && ae.Data.RetryAfterSeconds == 0 && tries < 4 {
			fmt.Fprintf(a.Stderr, "%s; try again.\n", ae.Message)
			continue
		}
		return nil, err
	}
}

// askHere reads one answer for challenge ch and returns the response JSON.
// What it shows and where the answer goes is the agent's ask (the label,
// the kind of input, the hint and any text to show whole), the same as
// the agent's own prompt shows.
func (a *App) askHere(ch api.Challenge, answers *bufio.Reader, scopes []string, purpose string) ([]byte, error) {
	ask := ch.Ask
	if ask.Input == "" {
		// An agent older than the ask: a code, as most methods take.
		ask = api.Ask{Label: "Code:", Input: api.InputCode, Field: "code"}
	}
	if answers != nil {
		if ask.Input == api.InputNone {
			return []byte("{}"), nil
		}
		line, err := answers.ReadString('\n')
		line = strings.TrimSpace(line)
		if line == "" && err != nil {
			return nil, errNoAnswer
		}
		return jsonMarshal(map[string]string{ask.Field: line})
	}
	tty, err := openTTY()
	if err != nil {
		return nil, api.Errorf(api.CodeNoPrompter, "no way to ask for the answer: %v", err).
			WithHint("run stepupctl in a terminal, pass --stdin, or start the agent with a prompter (--prompter auto)")
	}
	defer tty.Close()
	what := "step up for " + strings.Join(scopes, ", ")
	if purpose == "unlock" {
		what = "unlock stepup-agent"
	}
	fmt.Fprintf(tty, "stepup-agent: %s with %s.\n", what, ch.Method)
	if ask.Hint != "" {
		fmt.Fprintln(tty, ask.Hint)
	}
	if ask.Text != "" {
		fmt.Fprintf(tty, "\n%s\n\n", ask.Text)
	}
	if ask.Input == api.InputNone {
		// completeVerification with {} answers once the user has acted
		// (fprintd reports a match, the passkey page has posted).
		return []byte("{}"), nil
	}
	fmt.Fprint(tty, ask.Label+" ")
	var answer string
	if ask.Secret() {
		answer, err = readSecret(tty)
		fmt.Fprintln(tty)
	} else {
		answer, err = bufio.NewReader(eofReader{tty}).ReadString('\n')
	}
	answer = strings.TrimSpace(answer)
	if err != nil && answer == "" {
		if errors.Is(err, io.EOF) {
			return nil, api.Errorf(api.CodeCancelled, "cancelled at the terminal")
		}
		return nil, err
	}
	return jsonMarshal(map[string]string{ask.Field: answer})
}

// openTTY opens the controlling terminal.
func openTTY() (*os.File, error) {
	return os.OpenFile("/dev/tty", os.O_RDWR, 0)
}

// haveTTY reports whether this process has a terminal to ask on.
func haveTTY() bool {
	f, err := openTTY()
	if err != nil {
		return false
	}
	ok := term.IsTerminal(int(f.Fd()))
	f.Close()
	return ok
}
