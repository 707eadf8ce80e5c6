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

// Halter is an optional capability of a [Log] that stops taking writes for
// good after a failure that leaves what it wrote and what it applied apart:
// for Badger's, a failed sync of its write-ahead log, or a record written
// to that log that its index refused. A write applied after such a record
// would be built on a state without it, and the next open, which applies
// the log's records in their order, would put the record under it; so the
// log takes no more writes, and only that next open heals it. The daemon
// watches Halted and stops at once with an error, so that its service
// manager starts it again (the unit's Restart=on-failure); until its
// listeners close, GET /readyz fails and webhooks are answered 503.
type Halter interface {
	// Halted returns a channel that is closed once the log has stopped
	// taking writes. Every write after that fails with an error wrapping
	// [ErrHalted].
	Halted() <-chan struct{}
	// HaltErr says why the log stopped taking writes: an error wrapping
	// [ErrHalted] and its cause, or nil while it takes them.
	HaltErr() error
}

// QueueRebuild is how far a log has come in rebuilding its sinks' queues
// after it opened.
type QueueRebuild struct {
	// Read counts the event records the current attempt read so far, of
	// about Total: the seqs from the log's pending mark to its newest
	// event at the open.
	Read, Total int64
	// Err is why the last attempt failed, when one did: the rebuild is
	// then tried again (and Read starts over), and nothing is delivered
	// until it succeeds.
	Err string
}

// QueueRebuilder is an optional capability of a [Log] that rebuilds its
// sinks' queues in the background after it opens, as Badger's does: until
// the rebuild is done, what needs a queue whole waits for it (Fetch,
// Stats, Oldest, Waiting, Requeue, retention). The
// daemon's status (GET /v1/sinks, /metrics) asks it first, so that it
// answers at once during the rebuild instead of waiting for the counts.
type QueueRebuilder interface {
	// QueuesRebuilding returns the rebuild's progress and true while the
	// queues are being rebuilt (or a failed rebuild waits to be tried
	// again), and false once they are whole or the log is closed. It is
	// cheap and safe for concurrent use.
	QueuesRebuilding() (QueueRebuild, bool)
}

// QueuesRebuilding asks l whether it is rebuilding its queues; false when
// l does not rebuild them in the background ([QueueRebuilder]).
func QueuesRebuilding(l Log) (QueueRebuild, bool) {
	if r, ok := l.(QueueRebuilder); ok {
		return r.QueuesRebuilding()
	}
	return QueueRebuild{}, false
}
