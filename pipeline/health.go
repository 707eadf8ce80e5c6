package pipeline

// WriteChecker is an optional capability of a [Log]: it tells, without
// writing anything, whether an Append would be refused now because the log
// is closed or full. The daemon's readiness (GET /readyz) asks it, so that
// readiness comes back on its own once space is freed, with no webhook
// needed to find out. A Log that cannot tell cheaply does not implement it.
type WriteChecker interface {
	// CheckWrite returns nil when an Append may succeed now, or an error
	// wrapping [ErrFull] or [ErrClosed] that says why not. It is cheap
	// (no I/O beyond a statfs) and safe for concurrent use.
	CheckWrite() error
}
