// Package pipeline holds the domain types of pipelined and the interfaces
// between its parts: an [Event] as received, the [Entry] that the writer
// appends to the [Log], and the per-sink [Queue] that a dispatcher drains.
//
// The Log's implementations live under pipeline/eventlog, each named for
// what it wraps (badgerlog, jetstreamlog, memlog), with the conformance
// suite logtest; daemon wires them together. This package imports only the standard
// library.
package pipeline

import (
	"context"
	"time"
)

// Event is one webhook request as it was accepted. It never changes after
// it is appended: redeliveries and replays carry the same ID (P3).
type Event struct {
	// ID identifies the event for life; sinks use it to be idempotent.
	ID string
	// Source is the name of the [[source]] that received it.
	Source string
	// ReceivedAt is when the request was read, in UTC.
	ReceivedAt time.Time
	// Headers are the request headers with lower-case names (a header sent
	// on several lines: its values joined with ", "), without the ones
	// that carry credentials (Authorization, Cookie).
	Headers map[string]string
	// Body is the request body exactly as received: valid JSON.
	Body []byte
	// Auth says what verified the request ("none" when nothing did), so a
	// later replay need not check again.
	Auth string
	// DedupKey is the key the event was deduplicated by, empty when none.
	// [Log.Append] stores [Entry.DedupKey] here when that is set, so a
	// writer need not fill it.
	DedupKey string
	// TraceParent and TraceState are the W3C Trace Context (traceparent,
	// tracestate) of the span that accepted the event, stored with it so
	// that every delivery attempt, after a restart too, joins its trace.
	// Both are empty when tracing was off.
	TraceParent string
	TraceState  string
}

// Target is one sink that an event is routed to, with what the route made of it.
type Target struct {
	// Sink is the name of the [[sink]].
	Sink string
	// Route is the name of the [[route]] that chose the sink.
	Route string
	// Payload is the JSON the route's transform built; nil means the
	// event's Body is delivered as it is.
	Payload []byte
	// Err, when not empty, says why the route's transform failed; the log
	// then puts the event straight into the sink's dead-letter queue with
	// this error, so it is kept and visible instead of lost.
	Err string
}

// Entry is what the writer appends: an event, its dedup key and its routing.
type Entry struct {
	Event Event
	// DedupKey, when not empty, makes the entry a duplicate of an earlier
	// entry of the same source with the same key appended less than
	// DedupWindow ago, or earlier in the same Append call.
	DedupKey    string
	DedupWindow time.Duration
	// Targets lists each sink the event goes to, at most once per sink.
	Targets []Target
}

// Appended is the log's answer for one [Entry].
type Appended struct {
	// ID is the event's id: the entry's own, or the first event's when
	// Duplicate is true.
	ID string
	// Duplicate reports that the entry was absorbed by an earlier one with
	// the same dedup key (P4); nothing was written for it.
	Duplicate bool
}

// Log is the durable event log with one delivery queue per sink.
//
// The contract is written so that a replicated stream (NATS JetStream) can
// implement it as well as an embedded store: appends are atomic per call and
// durable when Append returns, queues are read in log order and settled per
// entry. The suite in package logtest checks every implementation.
type Log interface {
	// Append writes entries atomically and durably: when it returns nil,
	// every event, its dedup key and its queue entries survive a crash
	// (P1). It returns one Appended per entry, in order. Entries that are
	// duplicates (see [Entry.DedupKey]) are not written. Append may be
	// called from one goroutine at a time; the writer owns it. It returns
	// an error wrapping [ErrFull] when the log cannot take more (disk
	// full), and then nothing of the call was written. Append may keep
	// the entries' Body and Headers after it returns (badgerlog hands
	// just-appended events to its queues from memory): the caller must
	// not change them afterwards, as the writer never does.
	Append(ctx context.Context, entries []Entry) ([]Appended, error)

	// Queue returns the delivery queue of the named sink. Queues exist
	// implicitly: one that was never appended to is empty. There is one
	// consumer per queue per process.
	Queue(sink string) Queue

	// Event returns the event with the given id, or an error wrapping
	// [ErrNotFound].
	Event(ctx context.Context, id string) (Event, error)

	// Events lists the events that match f, in log order, at most f.Limit
	// of them. next is the cursor to pass as f.After for the following
	// page, or "" when the log holds nothing more to look at. A call may
	// stop early, after looking at a bounded number of events, and return
	// fewer than f.Limit events (even none) with a non-empty next: keep
	// calling until next is "". An After that this log did not return
	// gives an error wrapping [ErrBadCursor].
	Events(ctx context.Context, f EventFilter) (events []EventInfo, next string, err error)

	// Close releases the log. Appends and queue calls after Close return
	// [ErrClosed].
	Close() error
}

// EventFilter selects events for [Log.Events]. Its zero value selects every
// event; each field that is set narrows the selection.
type EventFilter struct {
	// ID selects the one event with this id.
	ID string
	// Source selects the events of one [[source]].
	Source string
	// Sink selects the events that were routed to this sink.
	Sink string
	// Since and Until select events with Since <= ReceivedAt < Until; a
	// zero time does not bound.
	Since, Until time.Time
	// DedupKey selects the events stored with this dedup key.
	DedupKey string
	// State selects the events whose delivery record (see [DeliveryLog])
	// to Sink, or to any of their sinks when Sink is empty, is in this
	// state: "queued", "retrying", "delivered", "dead", "dropped", or "pending"
	// ([StatePending]: queued or retrying). A Log that keeps no records
	// returns an error wrapping [ErrNotSupported] when it is set.
	State string
	// After is the cursor a previous call returned as next; "" starts at
	// the oldest event.
	After string
	// Limit bounds the events returned; 0 means 100.
	Limit int
}

// NewestFirstLog is a [Log] that can also list events newest first, for a
// page that shows the latest events without reading the whole log.
type NewestFirstLog interface {
	Log
	// EventsNewestFirst is [Log.Events] in reverse log order: it starts at
	// the newest event, and f.After is a cursor that a previous call of
	// EventsNewestFirst returned as next (not one of Events). Like Events,
	// a call may stop after a bounded number of events with fewer than
	// f.Limit and a non-empty next.
	EventsNewestFirst(ctx context.Context, f EventFilter) (events []EventInfo, next string, err error)
}

// EventInfo is an event as [Log.Events] lists it.
type EventInfo struct {
	Event
	// Seq is the event's position in the log.
	Seq uint64
	// Sinks are the sinks the event was routed to when it was appended,
	// in the order of its targets.
	Sinks []string
}

// Delivery is one queue entry handed to a dispatcher.
type Delivery struct {
	// Seq is the event's position in the log. Smaller is older.
	Seq uint64
	// Event is the event itself.
	Event Event
	// Route and Payload are the Target's.
	Route   string
	Payload []byte
	// Attempt counts deliveries of this entry to its sink, starting at 1;
	// a DLQ retry or a replay makes a new entry, which starts at 1 again
	// (sdk.Event.Attempt says so to plugins).
	Attempt int
	// LastError is the error of the previous attempt, if any.
	LastError string
}

// Outcome is what a dispatcher decided for one [Delivery].
type Outcome int

// The outcomes of a delivery.
const (
	// Ack removes the entry from the queue: the sink has it.
	Ack Outcome = iota + 1
	// Retry keeps the entry and makes it ready again at Settlement.RetryAt.
	Retry
	// Dead moves the entry to the sink's dead-letter queue with Settlement.Err.
	Dead
	// Hold parks the entry for per-key order (delivery.order_key): it stays
	// in the queue, counted as retrying, but Fetch does not return it until
	// [Holder.Release]. It costs no attempt and leaves the entry's delivery
	// record and LastError as they were. Only a [Holder] accepts it.
	Hold
)

// Settlement settles one delivered entry.
type Settlement struct {
	Seq     uint64
	Outcome Outcome
	// RetryAt is when a retried entry becomes ready again; the zero
	// time is at once.
	RetryAt time.Time
	// Err is the error of this attempt (for Retry and Dead).
	Err string
	// NotAttempted says the sink did not attempt the entry this time: it
	// was not handed to the sink (an operator gave up on it), or the sink
	// answered that it did not try it (sdk.NotAttempted). It costs no
	// attempt.
	//
	// With Dead, neither the dead letter's Attempts nor the delivery
	// record counts one; the record keeps its failures and gets Err as its
	// LastError.
	//
	// With Retry, the entry is ready again at RetryAt with the attempt
	// count and LastError it had (its next Fetch gives the same Attempt),
	// and its delivery record keeps its state, attempts, failures and
	// LastError; its NextAttemptAt becomes RetryAt, and its
	// NotAttemptedReason Err.
	NotAttempted bool
}

// Queue is one sink's delivery queue: entries in log order, retries that
// become ready at their time, and a dead-letter queue (P2).
type Queue interface {
	// Fetch returns up to max ready entries: due retries first, then new
	// entries in log order. It waits until at least one is ready or ctx is
	// done, and then returns ctx's error. Fetched entries are leased to the
	// caller: Fetch does not return them again until they are settled as
	// Retry, and after a restart unsettled entries are ready again.
	Fetch(ctx context.Context, max int) ([]Delivery, error)

	// Settle records the outcome of fetched entries, atomically for the
	// whole call.
	Settle(ctx context.Context, s []Settlement) error

	// Stats counts the queue's entries.
	Stats(ctx context.Context) (QueueStats, error)

	// DeadLetters lists up to limit dead-letter entries with Seq > after,
	// in log order. A limit less than 1 lists nothing (it does not mean
	// "no limit": a caller pages with a limit of its own, see P9).
	DeadLetters(ctx context.Context, after uint64, limit int) ([]DeadLetter, error)

	// RetryDead moves the dead-letter entries with the given seqs (nil:
	// all of them) back into the queue as retries due now. Their attempt
	// count starts again at 0, so the dispatcher gives each its full
	// max_attempts again; LastError keeps the error that killed it. Seqs
	// that are not dead letters are skipped. It returns how many entries
	// it moved.
	RetryDead(ctx context.Context, seqs []uint64) (int, error)

	// DropDead removes the dead-letter entries with the given seqs (nil:
	// all of them) and returns how many it removed; seqs that are not dead
	// letters are skipped. It is the only way an entry leaves a
	// dead-letter queue without being delivered (P2): call it only on an
	// operator's explicit command. The events themselves stay in the log
	// until retention removes them. A [DeliveryLog] then reports their
	// records in [StateDropped].
	DropDead(ctx context.Context, seqs []uint64) (int, error)

	// Requeue puts events that are in the log into this queue again, each
	// as a retry due now with the given route and payload and an attempt
	// count of 0 (replay). An event that already has an entry in this
	// queue (ready, leased, retrying or dead) is skipped, so a queue never
	// holds two entries for one event. A seq that is not in the log, for
	// example because retention removed it, fails the whole call with an
	// error wrapping [ErrNotFound] that names the seq; nothing is queued
	// then. It returns how many entries it added, and says of each entry
	// of rs whether it is a dead letter ([Requeue.Dead]). Its cost is
	// bounded by rs, not by the queue, which has two edges, each said in
	// its log's doc: badgerlog looks for the entry of an event routed
	// nowhere, in a log written before delivery records, among a bounded
	// number of retry keys, and queues one further on a second time;
	// jetstreamlog fails mid-call, the entries before queued, when
	// retention removes an event between its look and its turn.
	Requeue(ctx context.Context, rs []Requeue) (int, error)

	// Oldest returns the ReceivedAt of the oldest event (lowest Seq) that
	// has a ready, leased or retrying entry in the queue, or the zero time
	// when there is none. It costs about what Stats costs.
	Oldest(ctx context.Context) (time.Time, error)
}

// Requeue is one event for [Queue.Requeue].
type Requeue struct {
	Seq uint64
	// ID, when not empty, is the id of the event at Seq, as [Log.Events]
	// listed it. It is optional: a backend that names queue entries by
	// event id (jetstreamlog) then looks up the event's entries without
	// reading the event, and reads only the events it queues (P9: a
	// replay page of events of 1 MiB each). A backend may ignore it. An
	// ID that is not the event's at Seq is found out only when the event
	// is queued: jetstreamlog then fails the call with the entries before
	// it queued, not with nothing queued.
	ID string
	// Route and Payload are what the entry is delivered with, as in
	// [Target]; a nil Payload delivers the event's Body.
	Route   string
	Payload []byte
	// Dead is Requeue's answer, not its caller's: a call that returns no
	// error sets it on every entry of rs, true when it skipped the event
	// because the event is in this queue's dead-letter queue, false
	// otherwise (queued, or queued again by the call). A replay says from
	// it how many of the events it left alone are dead letters, without
	// reading them (P9); it costs a backend nothing more, since Requeue
	// looks for the dead letter to skip the event anyway.
	Dead bool
}

// QueueStats counts one queue's entries.
type QueueStats struct {
	// Ready counts entries waiting for their first delivery or leased.
	Ready int
	// Retrying counts entries waiting for a retry.
	Retrying int
	// Dead counts dead-letter entries.
	Dead int
}

// DeadLetter is an entry in a sink's dead-letter queue.
type DeadLetter struct {
	Seq      uint64
	Event    Event
	Route    string
	Payload  []byte
	Attempts int
	// Err is the last error; FailedAt when it happened.
	Err      string
	FailedAt time.Time
}

// QueueLister is a [Log] that can name the queues that hold entries, so
// that the daemon can show (and an operator drop) the events waiting for a
// sink that is no longer in the configuration: removed, or renamed.
// badgerlog and memlog are QueueListers.
type QueueLister interface {
	Log
	// QueueNames returns, sorted, the sinks whose queues hold entries:
	// ready, retrying, held or dead. A log that rebuilds its queues after
	// opening waits for that, or for ctx.
	QueueNames(ctx context.Context) ([]string, error)
}
