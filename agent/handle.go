package agent

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/stepup-agent/stepup-agent/api"
	"github.com/stepup-agent/stepup-agent/method"
	"github.com/stepup-agent/stepup-agent/prompt"
)

// Handle serves one request (ipc.Handler).
func (a *Agent) Handle(ctx context.Context, m string, params json.RawMessage) (any, error) {
	res, err := a.handle(ctx, m, params)
	switch m {
	case api.MethodIsStepUpRequired, api.MethodGetToken, api.MethodStatus, api.MethodJWKS, api.MethodListCredentials, api.MethodAuditHead:
		// Read-only: nothing to wait for.
	default:
		// What this request changed is in the keychain before the
		// client hears of it (docs/keychain.md, "Crash safety").
		a.persist.barrier(persistWait)
	}
	return res, wireError(err)
}

// persistWait bounds how long an answer waits for its keychain writes.
const persistWait = 5 * time.Second

// Blocking reports the methods that may wait on a person, a program or the
// network (ipc.Handler).
func (a *Agent) Blocking(m string) bool {
	switch m {
	case api.MethodPromptStepUpAuth, api.MethodPromptMfa, api.MethodPromptReauthenticate, api.MethodUnlock,
		api.MethodStartVerification, api.MethodCompleteVerification, api.MethodEnrollStart, api.MethodEnrollFinish,
		api.MethodRequestExternalAuth:
		return true
	}
	return false
}

func (a *Agent) handle(ctx context.Context, m string, params json.RawMessage) (any, error) {
	switch m {
	case api.MethodIsStepUpRequired:
		var p api.ScopeParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.IsStepUpRequired(ctx, p.Scope)
	case api.MethodPromptStepUpAuth, api.MethodPromptMfa, api.MethodPromptReauthenticate:
		var p api.PromptParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.Prompt(ctx, routeOf(m), &p)
	case api.MethodUnlock:
		var p api.PromptParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.UnlockPrompt(ctx, &p)
	case api.MethodStartVerification:
		var p api.StartVerificationParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.StartVerification(ctx, &p)
	case api.MethodCompleteVerification:
		var p api.CompleteVerificationParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.CompleteVerification(ctx, &p)
	case api.MethodGetToken:
		var p api.ScopeParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.GetToken(ctx, p.Scope)
	case api.MethodVerifyToken:
		var p api.VerifyTokenParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.VerifyToken(ctx, &p)
	case api.MethodResetState:
		var p api.ResetParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.ResetState(ctx, p.Scopes), nil
	case api.MethodEnrollStart:
		var p api.EnrollStartParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.EnrollStart(ctx, &p, params)
	case api.MethodEnrollFinish:
		var p api.EnrollFinishParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.EnrollFinish(ctx, &p)
	case api.MethodListCredentials:
		return a.ListCredentials(), nil
	case api.MethodRemoveCredential:
		var p api.RemoveCredentialParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.RemoveCredential(ctx, p.CredentialID)
	case api.MethodStatus:
		return a.Status(), nil
	case api.MethodJWKS:
		return a.signer.JWKS(), nil
	case api.MethodAuditHead:
		return a.AuditHead(), nil
	case api.MethodRequestExternalAuth:
		var p api.ExternalAuthParams
		if err := decode(params, &p); err != nil {
			return nil, err
		}
		return a.ExternalAuth(ctx, &p)
	case api.MethodLock:
		a.Lock(ctx, "stepupctl lock")
		return api.LockResult{Locked: true}, nil
	}
	return nil, api.Errorf(api.CodeMethodNotFound, "unknown method %q", m).
		WithHint("docs/protocol.md lists the methods; `stepupctl --help` the CLI verbs")
}

// wireError maps the errors of prompts, methods and contexts onto the
// protocol's codes. *api.Error passes through.
func wireError(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	var np *prompt.NoPrompterError
	switch {
	case errors.As(err, &np):
		return api.Errorf(api.CodeNoPrompter, "no way to show a prompt for this request").WithHint("%s", np.Hint)
	case errors.Is(err, prompt.ErrNoPrompter):
		return api.Errorf(api.CodeNoPrompter, "no way to show a prompt for this request").
			WithHint("run the client in a terminal or a graphical session, or start the agent with --prompter pinentry|zenity|terminal")
	case errors.Is(err, prompt.ErrCancelled):
		return api.Errorf(api.CodeCancelled, "the user dismissed the prompt")
	case errors.Is(err, prompt.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.CodeTimeout, "nobody answered the prompt in time").
			WithHint("answer sooner, or raise prompt.timeout in the policy or timeoutSeconds in the request")
	case errors.Is(err, context.Canceled):
		return api.Errorf(api.CodeCancelled, "the request was cancelled (the client hung up or the agent is stopping)")
	case errors.Is(err, method.ErrVerificationFailed):
		return api.Errorf(api.CodeVerificationFailed, "%s", err.Error())
	}
	return err
}
