package api

import (
	"errors"
	"fmt"
)

// Sentinel errors shared by the daemon's services and the client. A service
// wraps one of these; the daemon maps it to a JSON-RPC code; the client maps
// the code back, so errors.Is works on both sides.
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalid      = errors.New("invalid argument")
	ErrPrecondition = errors.New("failed precondition")
	ErrUnavailable  = errors.New("unavailable")
	ErrPermission   = errors.New("permission denied")
)

var codeOf = []struct {
	err  error
	code int
}{
	{ErrNotFound, CodeNotFound},
	{ErrExists, CodeExists},
	{ErrInvalid, CodeInvalidParams},
	{ErrPrecondition, CodeFailedPrecondition},
	{ErrUnavailable, CodeUnavailable},
	{ErrPermission, CodePermissionDenied},
}

// CodeFor returns the JSON-RPC error code for err: the code of the first
// sentinel it wraps, else CodeInternal.
func CodeFor(err error) int {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// RemoteError is an error returned by the daemon, as seen by the client. It
// unwraps to the sentinel matching its code.
type RemoteError struct {
	Code    int
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinel for the code, so errors.Is(err, ErrNotFound)
// works on the client side.
func (e *RemoteError) Unwrap() error {
	for _, c := range codeOf {
		if c.code == e.Code {
			return c.err
		}
	}
	return nil
}

// Errorf returns an error with a user-facing message that wraps kind (one
// of the sentinels above) without repeating the sentinel's text. Use %w in
// format to keep a cause.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }
