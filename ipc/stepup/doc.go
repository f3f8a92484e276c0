// Package stepup is the Go client of stepup-agent. Its vocabulary is the
// step-up API of Dynamic's SDKs, and these five calls are the whole of it
// for most programs:
//
//   - [Client.IsStepUpRequired]: does this scope need a step-up now? It
//     fails closed: any error, an unreachable agent included, answers true.
//   - [Client.PromptStepUpAuth]: verify the user and mint the scope's token;
//     the agent routes to MFA when the user has an MFA credential (TOTP,
//     passkey, recovery code) and to re-authentication otherwise.
//   - [Client.PromptMfa]: the same with MFA methods only.
//   - [Client.PromptReauthenticate]: the same with re-authentication methods
//     only (password, email or SMS code, wallet signature).
//   - [Client.ResetState]: forget the held tokens (all, or some scopes').
//
// The pattern is check, verify, proceed:
//
//	var c stepup.Client // $STEPUP_AUTH_SOCK or the default socket
//	if c.IsStepUpRequired(ctx, "wallet:export") {
//		if _, err := c.PromptStepUpAuth(ctx, stepup.PromptOptions{Scopes: []string{"wallet:export"}, Reason: "export wallet"}); err != nil {
//			return err // errors.Is(err, stepup.ErrCancelled) when the user said no
//		}
//	}
//	tok, err := c.GetToken(ctx, "wallet:export") // hand tok.Token to the relying party
//
// Beyond those: the custom-UI calls for an application that collects the
// answer itself ([Client.StartVerification], [Client.CompleteVerification]),
// the token calls ([Client.GetToken], [Client.VerifyToken]), enrollment,
// status and lock. Package stephttp puts the same calls behind an
// http.RoundTripper (answering RFC 9470 challenges) and an HTTP middleware.
// The wire protocol is docs/protocol.md.
//
// A zero Client works: it finds the agent at $STEPUP_AUTH_SOCK or the
// default path, connects on first use, checks that the process serving the
// socket runs as this user (SO_PEERCRED), and sends the caller's terminal
// and display with every prompt so that the prompt appears where the user
// is.
package stepup
