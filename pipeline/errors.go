package pipeline

import "errors"

// ErrFull is returned (wrapped) by [Log.Append] when the log cannot take more
// events, for example because its disk is full. Nothing of the call was
// written; ingest answers 503 with Retry-After and the sender tries again.
var ErrFull = errors.New("event log is full")

// ErrClosed is returned (wrapped) by a [Log] or [Queue] used after Close.
var ErrClosed = errors.New("event log is closed")

// ErrHalted is returned (wrapped, with its cause) by every write of a [Log]
// that stopped taking writes after a failure that only a new open heals
// (see [Halter]). Ingest answers 503, and the daemon stops with an error so
// that its service manager starts it again.
var ErrHalted = errors.New("event log stopped writing")

// ErrNotFound is returned (wrapped) when an event id is not in the log.
var ErrNotFound = errors.New("event not found")

// ErrTooBig is returned (wrapped) by [Log.Append] when the entries of one
// call do not fit in one atomic write; nothing was written, and the caller
// splits them and appends each part.
var ErrTooBig = errors.New("append too big for one atomic write")

// ErrBadCursor is returned (wrapped) by [Log.Events] when the After cursor
// is not one that the log returned. The admin API answers 400.
var ErrBadCursor = errors.New("bad cursor")

// ErrNotSupported is returned (wrapped) when a [Log] backend does not offer
// what was asked of it, for example a delivery-state filter on a backend
// that keeps no delivery records. The admin API answers 501.
var ErrNotSupported = errors.New("not supported on this backend")
