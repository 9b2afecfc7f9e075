package mulchat

import (
	"errors"
	"fmt"
)

// Error codes. Every error that crosses a package boundary carries one of these;
// the HTTP layer maps them to status codes in one table and the CLI prints the
// message. Only EINTERNAL errors are logged, and their messages are never shown
// to a client.
const (
	EINVALID        = "invalid"
	ENOTFOUND       = "not_found"
	ECONFLICT       = "conflict"
	EUNAUTHORIZED   = "unauthorized"
	EFORBIDDEN      = "forbidden"
	ERATELIMITED    = "rate_limited"
	ETOOLARGE       = "too_large"
	ENOTIMPLEMENTED = "not_implemented"
	EUNAVAILABLE    = "unavailable"
	EINTERNAL       = "internal"
)

// Error is mulchat's one error type. Message is safe to show to the caller:
// it never holds a secret (seed, token, password) or a driver's raw text.
type Error struct {
	Code    string
	Message string
	// Err is the underlying cause, kept for logs and errors.Is; it is not shown
	// to clients.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrapError returns an *Error with the given code and message that wraps err.
func WrapError(code string, err error, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, "" for nil and
// EINTERNAL for any other error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of err: the message of the first
// *Error in its chain, or "internal error" for anything else.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) && e.Code != EINTERNAL {
		return e.Message
	}
	return "internal error"
}

// ErrorMessageForCLI is what the command line prints for err: the message of
// an *Error (including EINTERNAL ones, since the operator is the one reading),
// or the error text itself.
func ErrorMessageForCLI(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Code == EINTERNAL && e.Err != nil {
			return e.Message + ": " + e.Err.Error()
		}
		return e.Message
	}
	return err.Error()
}
