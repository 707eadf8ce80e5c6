package pipeline

import "context"

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
	// max when no other entry waits, or when the page reached a bound of
	// the log's on the bytes it holds (large transform outputs); 0 only
	// when none waits. A max less than 1 moves nothing. The order in
	// which entries are taken is not specified.
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
