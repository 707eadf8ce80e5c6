package pipeline

import (
	"context"
	"time"
)

// The states of a [DeliveryRecord].
const (
	// StateQueued: waiting for its first attempt, being attempted, or
	// requeued by a replay.
	StateQueued = "queued"
	// StateRetrying: an attempt failed and another one is scheduled.
	StateRetrying = "retrying"
	// StateDelivered: the sink has the event.
	StateDelivered = "delivered"
	// StateDead: in the sink's dead-letter queue.
	StateDead = "dead"
	// StateDropped: an operator dropped it from the sink's dead-letter
	// queue (pipelined dlq drop, [Queue.DropDead]); it will not be
	// delivered there unless replayed. The record keeps its attempts and
	// last error, and [DeliveryRecord.DroppedAt] says when.
	StateDropped = "dropped"
	// StateUnknown: the event was written by a version of pipelined that
	// kept no delivery record, and no queue holds it any more.
	StateUnknown = "unknown"
)

// StatePending is the [EventFilter.State] that selects the deliveries still
// under way: [StateQueued] and [StateRetrying].
const StatePending = "pending"

// DeliveryRecord is what happened to one event at one sink. A log that keeps
// them ([DeliveryLog]) keeps them with the event, until retention removes it.
type DeliveryRecord struct {
	// Sink and Route are the target's.
	Sink  string
	Route string
	// State is one of StateQueued, StateRetrying, StateDelivered, StateDead,
	// StateDropped (StateUnknown only for events written before records
	// were kept).
	State string
	// Attempts counts every attempt to deliver the event to the sink, over
	// its whole life: a dead-letter retry or a replay does not reset it.
	Attempts int
	// FirstAttemptAt and LastAttemptAt are when the first and the latest
	// attempts were settled; zero before the first.
	FirstAttemptAt time.Time
	LastAttemptAt  time.Time
	// LastError is the error of the latest failed attempt (or of the
	// route's transform); a later success does not clear it.
	LastError string
	// DeliveredAt is when the sink last took the event; zero if never.
	DeliveredAt time.Time
	// NextAttemptAt is when a retrying entry is due again: the RetryAt of
	// the failed attempt that made it [StateRetrying], or the time of the
	// dead-letter retry that did; or when an entry the sink did not
	// attempt ([Settlement.NotAttempted]) is due again, whose state stays
	// what it was (queued, when it was never attempted); zero in any
	// other state. It is the
	// earliest time: a paused sink, an open breaker or a key held for
	// delivery.order_key delays the attempt past it.
	NextAttemptAt time.Time
	// NotAttemptedReason is why the sink did not attempt the event at its
	// latest call, when it did not ([Settlement.NotAttempted]: a 503 with
	// Retry-After stopped the batch before it, the receiver too slow for
	// the call's time): what the event waits for, which LastError (an
	// attempt's) does not say. Empty once a later call attempted it.
	NotAttemptedReason string
	// Held says the entry is held back ([Hold]): behind an earlier event
	// of its delivery.order_key, or skipped by an open breaker's probes
	// until they come back to it. It is then not due at NextAttemptAt but
	// when released. Reported by the logs that hold entries ([Holder]).
	Held bool
	// DroppedAt is when an operator last dropped the event from the sink's
	// dead-letter queue; zero if never, or when the log could not mark the
	// record as it dropped it (JetStream's drop of a whole dead-letter
	// queue: the state then says dropped, without a time). A replay keeps
	// it, as history.
	DroppedAt time.Time
	// Failures are the failed attempts, oldest first: the latest
	// [MaxFailures] of them, each with its time and error. A record
	// written before they were kept has none.
	Failures []Failure
}

// Failure is one failed attempt of a [DeliveryRecord].
type Failure struct {
	// Attempt is the attempt's number, counted as [DeliveryRecord.Attempts].
	Attempt int
	At      time.Time
	Err     string
}

// MaxFailures bounds the failed attempts a [DeliveryRecord] keeps: the
// latest ones.
const MaxFailures = 10

// Dropped returns r once an operator dropped its dead letter at now: every
// backend records a drop this way. Attempts, errors and failures stay.
func (r DeliveryRecord) Dropped(now time.Time) DeliveryRecord {
	r.State, r.DroppedAt, r.NextAttemptAt, r.Held = StateDropped, now, time.Time{}, false
	return r
}

// Settled returns r after one more attempt that ended in s at now: every
// backend records an attempt this way.
func (r DeliveryRecord) Settled(s Settlement, now time.Time) DeliveryRecord {
	if s.NotAttempted && s.Outcome == Dead {
		// Given up on (an operator, max_age): no call is to come, and a
		// dead letter retried or replayed starts with no reason.
		r.State, r.LastError, r.NextAttemptAt, r.NotAttemptedReason = StateDead, s.Err, time.Time{}, ""
		return r
	}
	if s.NotAttempted && s.Outcome == Retry {
		// No attempt: the record lists attempts only, so this shows as
		// when the entry is due again, and why it was not attempted.
		r.NextAttemptAt, r.Held, r.NotAttemptedReason = s.RetryAt, false, s.Err
		if r.State == "" { // a log that writes no record before the first settlement
			r.State = StateQueued
		}
		return r
	}
	r.Attempts++
	r.NotAttemptedReason = ""
	if r.FirstAttemptAt.IsZero() {
		r.FirstAttemptAt = now
	}
	r.LastAttemptAt = now
	r.NextAttemptAt = time.Time{}
	switch s.Outcome {
	case Ack:
		r.State, r.DeliveredAt = StateDelivered, now
	case Retry:
		r.State, r.LastError, r.NextAttemptAt = StateRetrying, s.Err, s.RetryAt
	case Dead:
		r.State, r.LastError = StateDead, s.Err
	}
	if s.Outcome == Retry || s.Outcome == Dead {
		// A new slice: r shares the caller's.
		fs := make([]Failure, 0, min(len(r.Failures)+1, MaxFailures))
		fs = append(fs, r.Failures[max(0, len(r.Failures)+1-MaxFailures):]...)
		r.Failures = append(fs, Failure{Attempt: r.Attempts, At: now, Err: s.Err})
	}
	return r
}

// DeliveryLog is a [Log] that keeps a [DeliveryRecord] for every (event,
// sink) pair, and can filter [Log.Events] on their state
// ([EventFilter.State]). A Log that is not one answers such a filter with
// an error wrapping [ErrNotSupported].
type DeliveryLog interface {
	Log
	// Deliveries returns the records of the event with the given id: one
	// per sink it was routed to, in the order of its targets, then one per
	// sink it was replayed to, by name. It returns an error wrapping
	// [ErrNotFound] when the event is not in the log.
	Deliveries(ctx context.Context, id string) ([]DeliveryRecord, error)
}

// MatchState reports whether a record in state s is selected by the
// [EventFilter.State] f.
func MatchState(f, s string) bool {
	switch f {
	case "":
		return true
	case StatePending:
		return s == StateQueued || s == StateRetrying
	}
	return f == s
}

// ValidFilterState reports whether f is a valid [EventFilter.State].
func ValidFilterState(f string) bool {
	switch f {
	case "", StatePending, StateQueued, StateRetrying, StateDelivered, StateDead, StateDropped:
		return true
	}
	return false
}
