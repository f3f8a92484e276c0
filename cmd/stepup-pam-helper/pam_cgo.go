//go:build cgo

package main

import (
	"errors"

	"github.com/msteinert/pam/v2"
	"github.com/stepup-agent/stepup-agent/method/password/pamproto"
)

// check runs one PAM transaction for user (authenticate, then account
// management). The conversation answers only PAM_PROMPT_ECHO_OFF, with the
// password, at most three times; PAM's messages go to info.
func check(service, user, password string, info func(string)) (kind, msg string) {
	answered := 0
	tx, err := pam.StartFunc(service, user, func(s pam.Style, m string) (string, error) {
		switch s {
		case pam.PromptEchoOff:
			answered++
			if answered > 3 {
				return "", errors.New("too many password prompts")
			}
			return password, nil
		case pam.PromptEchoOn:
			return "", errors.New("PAM asked for visible input; only the password is answered")
		case pam.ErrorMsg, pam.TextInfo:
			info(m)
			return "", nil
		}
		return "", errors.New("unsupported PAM conversation style")
	})
	if err != nil {
		return pamproto.Error, "pam_start: " + err.Error()
	}
	defer tx.End()
	err = tx.Authenticate(pam.DisallowNullAuthtok)
	if err == nil {
		err = tx.AcctMgmt(pam.DisallowNullAuthtok)
	}
	if err == nil {
		return pamproto.OK, ""
	}
	var pe pam.Error
	if errors.As(err, &pe) {
		switch pe {
		case pam.ErrAuth, pam.ErrUserUnknown, pam.ErrMaxtries, pam.ErrCredInsufficient, pam.ErrPermDenied:
			return pamproto.Wrong, ""
		case pam.ErrAcctExpired:
			return pamproto.AccountExpired, ""
		case pam.ErrNewAuthtokReqd:
			return pamproto.PasswordExpired, ""
		}
	}
	return pamproto.Error, err.Error()
}
