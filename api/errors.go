package api

import (
	"errors"
	"fmt"
)

// Error codes (docs/protocol.md, "Errors"). JSON-RPC's own come first.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603

	CodeCancelled          = 4001
	CodeVerificationFailed = 4002
	CodeRateLimited        = 4003
	CodeTimeout            = 4004
	CodeForbidden          = 4005
	CodeNotEnrolled        = 4006
	CodeTokenInvalid       = 4007
	CodeUnknownScope       = 4008
	CodeNoPrompter         = 4009
	CodeLocked             = 4010
	CodeKeychainFailed     = 4011
)

var reasons = map[int]string{
	CodeParseError:         "parse_error",
	CodeInvalidRequest:     "invalid_request",
	CodeMethodNotFound:     "method_not_found",
	CodeInvalidParams:      "invalid_params",
	CodeInternal:           "internal_error",
	CodeCancelled:          "cancelled",
	CodeVerificationFailed: "verification_failed",
	CodeRateLimited:        "rate_limited",
	CodeTimeout:            "timeout",
	CodeForbidden:          "forbidden",
	CodeNotEnrolled:        "not_enrolled",
	CodeTokenInvalid:       "token_invalid",
	CodeUnknownScope:       "unknown_scope",
	CodeNoPrompter:         "no_prompter",
	CodeLocked:             "locked",
	CodeKeychainFailed:     "keychain_failed",
}

// Reason returns the data.reason string of a code.
func Reason(code int) string { return reasons[code] }

// ErrorData is the data member of an error object. Reason is always set;
// the rest depend on the error.
type ErrorData struct {
	Reason            string `json:"reason"`
	Hint              string `json:"hint,omitempty"`
	RetryAfterSeconds int    `json:"retryAfterSeconds,omitempty"`
	Scope             string `json:"scope,omitempty"`
	Method            string `json:"method,omitempty"`
	RequiredScope     string `json:"requiredScope,omitempty"`
}

// Error is a protocol error object {code, message, data}. It maps
// one-to-one onto the codes above; errors.Is matches on the code, so
// errors.Is(err, api.ErrCancelled) holds for any cancellation.
type Error struct {
	Code    int       `json:"code"`
	Message string    `json:"message"`
	Data    ErrorData `json:"data"`
}

func (e *Error) Error() string {
	if e.Data.Hint != "" {
		return fmt.Sprintf("%s (hint: %s)", e.Message, e.Data.Hint)
	}
	return e.Message
}

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Errorf makes an *Error with the reason of code.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Data: ErrorData{Reason: reasons[code]}}
}

// WithHint returns e with a hint saying what to do.
func (e *Error) WithHint(format string, args ...any) *Error {
	e.Data.Hint = fmt.Sprintf(format, args...)
	return e
}

// Sentinels for errors.Is.
var (
	ErrCancelled          = &Error{Code: CodeCancelled, Message: "cancelled"}
	ErrVerificationFailed = &Error{Code: CodeVerificationFailed, Message: "verification failed"}
	ErrRateLimited        = &Error{Code: CodeRateLimited, Message: "rate limited"}
	ErrTimeout            = &Error{Code: CodeTimeout, Message: "timeout"}
	ErrForbidden          = &Error{Code: CodeForbidden, Message: "forbidden"}
	ErrNotEnrolled        = &Error{Code: CodeNotEnrolled, Message: "not enrolled"}
	ErrTokenInvalid       = &Error{Code: CodeTokenInvalid, Message: "token invalid"}
	ErrUnknownScope       = &Error{Code: CodeUnknownScope, Message: "unknown scope"}
	ErrNoPrompter         = &Error{Code: CodeNoPrompter, Message: "no prompter"}
	ErrLocked             = &Error{Code: CodeLocked, Message: "locked"}
	ErrMethodNotFound     = &Error{Code: CodeMethodNotFound, Message: "method not found"}
	ErrInvalidParams      = &Error{Code: CodeInvalidParams, Message: "invalid params"}
)
