package pipeline

import "context"

// Holder is a [Queue] that can park entries for per-key order
// (delivery.order_key on a sink): a dispatcher settles the entries whose
// key is busy as [Hold] and releases them one at a time. badgerlog and
// memlog are Holders; jetstreamlog is not (the configuration refuses
// order_key there).
type Holder interface {
	Queue

	// Release makes the held entries with the given seqs (nil: all of
	// them) due now, as retries, with the attempt count and LastError they
	// had. Seqs that are not held are skipped. It returns how many entries
	// it released. A dispatcher without an order key releases all at
	// start, so that removing order_key never strands an entry.
	Release(ctx context.Context, seqs []uint64) (int, error)

	// SettleRelease is [Queue.Settle] of s and [Holder.Release] of
	// release in one atomic call: the held entries are released after s
	// is applied, so an entry held by s can be released by the same call.
	SettleRelease(ctx context.Context, s []Settlement, release []uint64) error

	// Waiting calls visit, in no particular order, for every entry of the
	// queue that a dispatcher restarting with per-key order must know of:
	// each held and retrying entry, each dead letter when dead is true,
	// and each ready entry with a Seq below the highest Seq of those
	// (entries that were fetched and not settled when the process
	// stopped). It stops at visit's first error and returns it. It reads
	// every such event, so it costs about one event read per entry.
	Waiting(ctx context.Context, dead bool, visit func(Waiting) error) error
}

// Waiting is one entry as [Holder.Waiting] reports it.
type Waiting struct {
	Seq   uint64
	Event Event
	// State is WaitingHeld, WaitingRetry, WaitingDead or WaitingReady.
	State WaitingState
}

// WaitingState says where a [Waiting] entry is.
type WaitingState int

// The states of a [Waiting] entry.
const (
	// WaitingReady is a ready entry, never settled.
	WaitingReady WaitingState = iota + 1
	// WaitingRetry is an entry waiting for a retry (due or not).
	WaitingRetry
	// WaitingHeld is an entry settled as [Hold] and not released since.
	WaitingHeld
	// WaitingDead is a dead letter.
	WaitingDead
)

// Hastener is a [Queue] that can make entries waiting for a retry due at
// once: an operator who gave up on an event (pipelined dlq add) need not
// wait for its next attempt, an hour away after a day of failures.
// badgerlog and memlog are Hasteners.
type Hastener interface {
	Queue

	// Hasten makes the retry entries with the given seqs due now, with
	// the attempt count and LastError they had, and returns how many it
	// moved. Seqs that are not waiting for a retry due later (ready,
	// leased, held, dead, due already, or not in the queue) are skipped:
	// a held entry waits for its key, or for the breaker's probes.
	Hasten(ctx context.Context, seqs []uint64) (int, error)
}

// GiveUp is an entry of a sink's queue that an operator gave up on
// (pipelined dlq add): it goes to the dead-letter queue at its next turn
// instead of to the sink.
type GiveUp struct {
	// Seq is the entry's position in the log; ID is its event's id.
	Seq uint64
	ID  string
	// Reason is the operator's, for the dead letter's error; it may be
	// empty.
	Reason string
}

// Abandoner is a [Queue] whose waiting entries can be moved to its
// dead-letter queue without a dispatcher: an operator gives up on every
// event still waiting for a sink that is no longer in the configuration
// (pipelined dlq add SINK --all). badgerlog and memlog are Abandoners;
// jetstreamlog is not (its daemons share the queues).
type Abandoner interface {
	Queue

	// Abandon moves up to max of the entries that wait in the queue
	// (ready, or retrying whether due or not, held ones included; not
	// leased ones, which a consumer holds) to its dead-letter queue in
	// one atomic call, as [Queue.Settle] of a [Dead] [Settlement] with
	// NotAttempted would: no attempt is counted, the delivery record
	// becomes dead, and the dead letter's error is errFor(the entry's
	// LastError, "" if none). It returns how many it moved: fewer than
	// max only when no other entry waits. A max less than 1 moves
	// nothing. The order in which entries are taken is not specified.
	//
	// Call it only on a queue that no dispatcher reads: it knows nothing
	// of per-key order or of a dispatcher's give-ups. It never removes
	// an entry (P2): what it moves stays a dead letter until
	// [Queue.DropDead].
	Abandon(ctx context.Context, max int, errFor func(lastErr string) string) (int, error)
}

// GiveUpError is the dead letter's error of an entry an operator gave up
// on, with the operator's reason (may be empty) and the error of the
// entry's last failed attempt (empty when none failed).
func GiveUpError(reason, lastErr string) string {
	msg := "given up by an operator"
	if reason != "" {
		msg += ": " + reason
	}
	if lastErr != "" {
		msg += " (last error: " + lastErr + ")"
	}
	return msg
}
