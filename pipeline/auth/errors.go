package auth

// Error is a failed check, returned by [Verifier.Verify]. Reason is one short
// line that helps the sender fix the request, such as "signature mismatch"
// or "timestamp too old"; it never contains a secret, a computed MAC or the
// received signature, so it may be sent back in a 401 body and logged.
// Callers find it with errors.As.
type Error struct {
	Reason string
}

// Error returns the reason prefixed with "auth: ".
func (e *Error) Error() string { return "auth: " + e.Reason }

// fail returns an *Error with the given reason.
func fail(reason string) error { return &Error{Reason: reason} }
