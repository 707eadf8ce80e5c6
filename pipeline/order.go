package pipeline

import (
	"context"
	"time"
)

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

	// DropDeadSeqs is [Queue.DropDead] of the chosen seqs that returns
	// the seqs of the dead letters it removed, in increasing order: a
	// seq that is not a dead letter when it runs (another call retried
	// or dropped it first, or it was never one) is not among them, nor
	// is one after an error. A dispatcher with per-key order is told of
	// exactly those (admin.Options.OnDropDead): a key held behind a dead
	// letter that was retried instead must stay held. seqs nil drops
	// nothing.
	DropDeadSeqs(ctx context.Context, seqs []uint64) ([]uint64, error)
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
	// moved, with an error too when it failed after moving some. Seqs
	// that are not waiting for a retry due later (ready,
	// leased, held, dead, due already, or not in the queue) are skipped:
	// a held entry waits for its key, or for the breaker's probes.
	//
	// A call costs in proportion to the seqs asked for, not to what the
	// queue holds (P9: a sink in a day-long outage holds millions of
	// retries, and its Fetch and Settle may wait for the call): badgerlog
	// finds each entry with point lookups, memlog in a map. (badgerlog
	// looks for an entry whose delivery record does not say when it is
	// due, in a log written before records said so, among a bounded
	// number of retry keys: one further on keeps its time.)
	Hasten(ctx context.Context, seqs []uint64) (int, error)
}

// RetryHastener is a [Queue] whose waiting retries can all be made due at
// once, without naming them: an operator whose sink is back after an
// outage (pipelined sinks retry-now) need not wait out the Retry-After of
// a day that its failed calls carried, nor the backoff, whether the
// failures happened before the last restart or since. badgerlog, memlog
// and jetstreamlog are RetryHasteners.
type RetryHastener interface {
	Queue

	// HastenRetries makes up to max of the entries that wait for a retry
	// due later (not held ones, which wait for their key or for the
	// breaker's probes; not leased, ready, dead or already due ones) due
	// now, with the attempt count and LastError they had, and returns how
	// many it moved. It is one page of the walk w, which the caller
	// begins with a zero RetryWalk and passes to every call of it (see
	// [RetryWalk]); the walk is over when w.Done. A caller pages through
	// a large queue by calling it until then (P9: a million waiting
	// retries are not one transaction). A max less than 1 moves nothing.
	//
	// A walk hastens the entries that waited for a later retry as it
	// began (its first call), each once: an entry whose attempt failed
	// after w.Began is passed by, even when it waits again (an entry that
	// was made due and failed again, or was not attempted and waits again
	// ([Settlement.NotAttempted]), is not made due twice, and does not
	// keep a walk from the entries that still wait). So a walk ends,
	// however fast the sink fails.
	//
	// Each call is bounded in time and memory whatever the queue holds: a
	// page ends at max entries moved, at a bound of the log's on the bytes
	// one call writes (large transform outputs), or at a bound of the
	// log's on the entries it examines and passes by (due, leased, failed
	// since the walk began); so a call may move none and leave the walk
	// not done. The order in which entries are taken is not specified
	// (badgerlog's is earliest due first).
	//
	// It changes only when entries become due, never their order among
	// the entries of one key: per-key order (delivery.order_key) holds
	// the later events of a key, and a held entry is never hastened.
	HastenRetries(ctx context.Context, w *RetryWalk, max int) (int, error)
}

// RetryWalk is where a walk of [RetryHastener.HastenRetries] through one
// queue is (a retry-now). Its zero value begins one; the caller passes the
// same RetryWalk to each call, and only reads it. Walks are independent:
// two callers each walk with their own.
type RetryWalk struct {
	// Began is when the walk began: the first call sets it.
	Began time.Time
	// Done says the walk is over: every entry that waited for a later
	// retry as it began was hastened, or no longer waits, or failed
	// again since (see HastenRetries). A call with a walk that is done
	// moves nothing.
	Done bool
	// State is where the walk is, the log's own (a position in its
	// retries).
	State any
}

// RetryClock is a [Queue] that can say when the next of its retries
// waiting to become due is due, without reading them all: GET /v1/sinks,
// polled every few seconds, shows how long until a sink's delivery
// resumes (next_retry_seconds) at a bounded cost (P9). badgerlog, whose
// retry keys sort by due time, seeks one key (and passes a bounded number
// of deleted ones); memlog, all in memory, looks at its retries as its
// Fetch does. jetstreamlog is not one: its retry times are in messages,
// read one at a time.
type RetryClock interface {
	Queue

	// NextRetry returns when the earliest entry that waits for a retry
	// due after now becomes due, or the zero time when none does. A
	// retry due already (waiting for a Fetch, for an open breaker's
	// probe or for a resume), a held entry (which waits for its key) and
	// a leased one do not count. It may fail rather than take more than
	// a bounded time (badgerlog, past a run of deleted keys that
	// compaction has not removed yet): the answer is then not known.
	NextRetry(ctx context.Context, now time.Time) (time.Time, error)
}
