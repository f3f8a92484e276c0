package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"
	"github.com/stepup-agent/stepup-agent/api"
)

func (a *App) enrollCmd() *cobra.Command {
	var p api.EnrollStartParams
	var startOnly bool
	var finish, code, response string
	var f promptFlags
	cmd := &cobra.Command{
		Use:   "enroll METHOD",
		Short: "Enroll a credential: totp, passkey, email_otp, sms_otp, wallet, fingerprint (recovery_code regenerates codes)",
		Long: `enroll adds a credential. For totp it shows a QR code to scan with an
authenticator app, then asks for a code to confirm.

Adding a credential when one exists needs a step-up for credential:link
(regenerating recovery codes: credential:update); enroll asks for it first.

For scripts, enrollment has two steps:
  stepupctl enroll totp --start --json          # prints enrollmentId, secret, otpauthUri
  stepupctl enroll --finish ID --code 123456    # confirms`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if finish != "" {
				return a.enrollFinish(ctx, finish, code, response)
			}
			if len(args) != 1 {
				return UsageError{errors.New("enroll takes a method (totp, passkey, email_otp, sms_otp, wallet) or --finish ID"), cmd.CommandPath()}
			}
			p.Method = args[0]
			a.warnIfNotPersistent(ctx)
			res, err := a.Client.EnrollStart(ctx, p)
			var ae *api.Error
			if errors.As(err, &ae) && ae.Code == api.CodeForbidden && ae.Data.RequiredScope != "" && !startOnly {
				fmt.Fprintf(a.Stderr, "Adding a credential needs a step-up for %s first.\n", ae.Data.RequiredScope)
				if _, err := a.stepUp(ctx, []string{ae.Data.RequiredScope}, &f); err != nil {
					return err
				}
				res, err = a.Client.EnrollStart(ctx, p)
			}
			if err != nil {
				return err
			}
			if startOnly {
				return a.PrintJSON(res)
			}
			return a.enrollInteractive(ctx, p.Method, res)
		},
	}
	cmd.Flags().StringVar(&p.Label, "label", "", "a label for the credential")
	cmd.Flags().StringVar(&p.Address, "address", "", "email_otp: the email address; wallet: the 0x address")
	cmd.Flags().StringVar(&p.Phone, "phone", "", "sms_otp: the phone number (E.164, +15551234567)")
	cmd.Flags().BoolVar(&startOnly, "start", false, "only start the enrollment and print it as JSON (finish with --finish)")
	cmd.Flags().StringVar(&finish, "finish", "", "finish the enrollment with this `ID`")
	cmd.Flags().StringVar(&code, "code", "", "with --finish: the confirmation code")
	cmd.Flags().StringVar(&response, "response", "", "with --finish: the whole response as JSON (e.g. {\"signature\":\"0x…\"})")
	f.add(cmd)
	return cmd
}

func (a *App) enrollFinish(ctx context.Context, id, code, response string) error {
	var resp any = map[string]string{"code": code}
	if response != "" {
		var v any
		if err := json.Unmarshal([]byte(response), &v); err != nil {
			return UsageError{fmt.Errorf("--response is not JSON: %v", err), "stepupctl enroll"}
		}
		resp = v
	} else if code == "" {
		resp = map[string]any{}
	}
	res, err := a.Client.EnrollFinish(ctx, id, resp)
	if err != nil {
		return err
	}
	return a.showEnrolled(res)
}

func (a *App) showEnrolled(res *api.EnrollFinishResult) error {
	if a.JSON {
		return a.PrintJSON(res)
	}
	fmt.Fprintf(a.Stdout, "Enrolled %s credential %s.\n", res.Method, res.CredentialID)
	if len(res.RecoveryCodes) > 0 {
		fmt.Fprintln(a.Stdout, "\nRecovery codes: each works once, and they are shown only now. Keep them somewhere safe:")
		for _, c := range res.RecoveryCodes {
			fmt.Fprintf(a.Stdout, "  %s\n", c)
		}
	}
	return nil
}

// enrollInteractive shows what the method needs and asks for the answer
// on the terminal.
func (a *App) enrollInteractive(ctx context.Context, m string, res *api.EnrollStartResult) error {
	id := res.EnrollmentID
	if m == api.RecoveryCode {
		// Regenerating: the new codes replace the old ones once confirmed.
		r, err := a.Client.EnrollFinish(ctx, id, map[string]any{})
		if err != nil {
			return err
		}
		if res.RecoveryEnrollment != nil && len(r.RecoveryCodes) == 0 {
			r.RecoveryCodes = res.RecoveryCodes
		}
		return a.showEnrolled(r)
	}
	if m == api.Fingerprint {
		// Nothing to type: fprintd has the fingers; registering them
		// lets them answer step-ups.
		if res.FingerprintEnrollment != nil && !a.JSON {
			fmt.Fprintf(a.Stdout, "Fingers enrolled with fprintd: %s\n", strings.Join(res.Fingers, ", "))
		}
		r, err := a.Client.EnrollFinish(ctx, id, map[string]any{})
		if err != nil {
			return err
		}
		return a.showEnrolled(r)
	}
	tty, err := openTTY()
	if err != nil {
		a.PrintJSON(res)
		return api.Errorf(api.CodeNoPrompter, "no terminal to finish the enrollment on").
			WithHint("finish it with: stepupctl enroll --finish %s --code CODE", id)
	}
	defer tty.Close()
	in := bufio.NewReader(tty)
	field, label := "code", "Code from the app: "
	switch m {
	case api.TOTP:
		var totp api.TOTPEnrollment
		if res.TOTPEnrollment != nil {
			totp = *res.TOTPEnrollment
		}
		uri := totp.OtpauthURI
		fmt.Fprintln(tty, "Scan this QR code with your authenticator app:")
		qrterminal.GenerateWithConfig(uri, qrterminal.Config{Level: qrterminal.L, Writer: tty, HalfBlocks: true,
			BlackChar: qrterminal.BLACK_BLACK, WhiteChar: qrterminal.WHITE_WHITE, BlackWhiteChar: qrterminal.BLACK_WHITE, WhiteBlackChar: qrterminal.WHITE_BLACK, QuietZone: 1})
		fmt.Fprintf(tty, "or enter this secret by hand: %s\n", totp.Secret)
	case api.EmailOTP, api.SMSOTP:
		if res.OTPChallenge != nil {
			fmt.Fprintf(tty, "A code was sent to %s.\n", res.Destination)
		}
		label = "Code: "
	case api.Wallet:
		if res.WalletChallenge != nil {
			fmt.Fprintf(tty, "Sign this message with the wallet (personal_sign):\n\n%s\n\n", res.Message)
		}
		field, label = "signature", "Signature (0x…): "
	case api.Passkey:
		if res.PasskeyCeremony != nil {
			fmt.Fprintf(tty, "Open %s in your browser and create the passkey; then press Enter.\n", res.URL)
		}
		in.ReadString('\n')
		r, err := a.Client.EnrollFinish(ctx, id, map[string]any{})
		if err != nil {
			return err
		}
		return a.showEnrolled(r)
	}
	for tries := 0; ; tries++ {
		fmt.Fprint(tty, label)
		line, err := in.ReadString('\n')
		line = strings.TrimSpace(line)
		if line == "" && err != nil {
			return api.Errorf(api.CodeCancelled, "enrollment cancelled at the terminal")
		}
		r, err := a.Client.EnrollFinish(ctx, id, map[string]string{field: line})
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeVerificationFailed && tries < 4 {
			fmt.Fprintf(tty, "%s; try again.\n", ae.Message)
			continue
		}
		if err != nil {
			return err
		}
		return a.showEnrolled(r)
	}
}
