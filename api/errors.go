package api

import (
	"fmt"
	"net/http"
)

// Error codes.
const (
	CodeNotFound    = "not_found"
	CodeBadRequest  = "bad_request"
	CodeConflict    = "conflict"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
	// CodeMethodNotAllowed is the code of a 405 answer (the route exists, not for that
	// method). The server writes it itself; a Service never returns it.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeUnauthenticated (401): no token, or one that is not valid (unknown, revoked,
	// malformed). The server writes it itself.
	CodeUnauthenticated = "unauthenticated"
	// CodeForbidden (403): a valid token whose role may not do this.
	CodeForbidden = "forbidden"
)

// Error is an API error: what the Service returns, what the server writes as
// {"error": {...}}, and what the Client decodes back.
type Error struct {
	Code    string `json:"code"`            // not_found, bad_request, conflict, unavailable, internal
	Message string `json:"message"`         // for people; names the field when Field is set
	Field   string `json:"field,omitempty"` // the offending input, dotted: "name", "policy.window", "limit"
}

// Error returns the message (it already names the field, if any).
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Message
}

// HTTPStatus is the HTTP status the server answers this error with.
func (e *Error) HTTPStatus() int { return statusOf(e.Code) }

func statusOf(code string) int {
	switch code {
	case CodeNotFound:
		return http.StatusNotFound
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeConflict:
		return http.StatusConflict
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// codeOf is statusOf's inverse, for answers that carry no error body.
func codeOf(status int) string {
	switch status {
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	case http.StatusUnauthorized:
		return CodeUnauthenticated
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusConflict:
		return CodeConflict
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	if status >= 400 && status < 500 {
		return CodeBadRequest
	}
	return CodeInternal
}

// NotFound is a not_found error: the VM (or route) does not exist.
func NotFound(format string, args ...any) *Error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf(format, args...)}
}

// BadRequest is a bad_request error about one input field; the message is prefixed with the
// field's name ("policy.window: ...") when field is not empty.
func BadRequest(field, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &Error{Code: CodeBadRequest, Message: msg, Field: field}
}

// Conflict is a conflict error: the request is well formed but makes no sense now
// ("reboot v2: vm is shutoff, not running").
func Conflict(format string, args ...any) *Error {
	return &Error{Code: CodeConflict, Message: fmt.Sprintf(format, args...)}
}

// Unavailable is an unavailable error: the daemon cannot serve this now (store or libvirt
// down, shutting down); retrying later may work.
func Unavailable(format string, args ...any) *Error {
	return &Error{Code: CodeUnavailable, Message: fmt.Sprintf(format, args...)}
}

// Internal is an internal error: a bug or an unexpected failure.
func Internal(format string, args ...any) *Error {
	return &Error{Code: CodeInternal, Message: fmt.Sprintf(format, args...)}
}
