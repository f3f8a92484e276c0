//go:build !cgo

package main

import "github.com/stepup-agent/stepup-agent/method/password/pamproto"

// check fails: without cgo there is no libpam to call.
func check(service, user, password string, info func(string)) (kind, msg string) {
	return pamproto.Error, "this stepup-pam-helper was built without cgo and cannot call PAM; rebuild it with libpam0g-dev installed (CGO_ENABLED=1)"
}
