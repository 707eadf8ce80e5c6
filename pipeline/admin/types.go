package admin

import (
	"encoding/json"
	"fmt"
	"time"
)

// PluginRemoved is the [SinkStatus.Plugin] of a sink the configuration
// no longer names (a reload removed it, or it was removed or renamed
// while the daemon was stopped) and whose queue still holds entries:
// nothing delivers them. Its dead letters can be listed and dropped, not
// retried; its waiting events can be given up on whole ([GiveUpAll]).
const PluginRemoved = "removed"

// SinkStatus is one sink as /v1/sinks shows it.
type SinkStatus struct {
	Name string `json:"name"`
	// Plugin is the plugin's state: starting, running, backoff (it exited
	// and is started again after a delay), failed (its last start failed;
	// it is tried again after a delay), stopped, or removed
	// ([PluginRemoved]).
	Plugin string `json:"plugin"`
	// PluginReason says why the plugin is failed: its last stderr line, or
	// else the start error.
	PluginReason string `json:"plugin_reason,omitempty"`
	PID          int    `json:"pid,omitempty"`
	// LastError is the sink's most recent failure, a plugin exit (or
	// failed start) or a failed delivery, and LastErrorAt when it
	// happened. Both are empty once a later delivery to the sink succeeded.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Ready, Retrying and Dead count the sink's queue entries.
	Ready    int `json:"ready"`
	Retrying int `json:"retrying"`
	Dead     int `json:"dead"`
	// OldestAgeSeconds is how long ago the oldest event still waiting for
	// delivery (ready, in flight or retrying) was received; absent when
	// none waits. The handler fills it from [Options.Log] when it is 0.
	OldestAgeSeconds float64 `json:"oldest_age_seconds,omitempty"`
	// Breaker is the sink's circuit breaker: "closed", or "open" while
	// the sink failed delivery.breaker_failures calls in a row and only
	// probes are sent; empty when the sink is not dispatching.
	Breaker string `json:"breaker,omitempty"`
	// InFlight counts the events of the batch the sink's plugin holds now
	// (handed over, outcomes not yet recorded), and InFlightSeconds is how
	// long ago it was handed over: a batch that stays for long is a plugin
	// stuck in its call. Absent between batches.
	InFlight        int     `json:"in_flight,omitempty"`
	InFlightSeconds float64 `json:"in_flight_seconds,omitempty"`
	// NextProbeSeconds is, while the breaker is open, how long until its
	// next probe (the first that succeeds closes it and the queue
	// drains): the most a sink that is back waits. Absent while the
	// breaker is closed, a probe is under way or the sink is paused.
	NextProbeSeconds float64 `json:"next_probe_seconds,omitempty"`
	// NextRetrySeconds is how long until the earliest of the sink's
	// events that wait for a retry due later (a backoff, a Retry-After)
	// is due: with NextProbeSeconds, when delivery resumes, in 40 s or in
	// an hour. Absent when none waits for a later retry (none waits, or
	// all are due: taken at the next fetch, or by an open breaker's
	// probe), while the sink is paused (nothing is retried until it is
	// resumed), for a removed sink (nothing delivers it), while the counts
	// are not known, and with a log that cannot say at the cost of a
	// lookup (JetStream). The handler fills it from [Options.Log]
	// ([AddNextRetries]).
	NextRetrySeconds float64 `json:"next_retry_seconds,omitempty"`
	// Paused is true while an operator holds the sink's delivery
	// (POST /v1/sinks/{sink}/pause); kept across restarts. Absent when
	// false.
	Paused bool `json:"paused,omitempty"`
	// HeldKeys counts the keys of a sink with delivery.order_key that
	// hold events back behind one of theirs (in flight, retrying or, with
	// order_on_dead = "block", dead); Held counts the events held back,
	// and OldestHeldAgeSeconds is how long ago the oldest of them was
	// received. Absent without order_key or when nothing is held.
	HeldKeys             int     `json:"held_keys,omitempty"`
	Held                 int     `json:"held,omitempty"`
	OldestHeldAgeSeconds float64 `json:"oldest_held_age_seconds,omitempty"`
	// Rebuilding is true while the daemon rebuilds the sinks' queues after
	// its start (a backlog of millions takes seconds, and delivery starts
	// after it): Ready, Retrying and Dead are not known yet (0 here, and
	// left out of the JSON), and [SinkList.QueuesRebuild] says how far it
	// is. Absent when false.
	Rebuilding bool `json:"rebuilding,omitempty"`
	// QueueError says why the sink's queue could not be counted (the
	// log did not answer: a JetStream stream without a quorum, say);
	// Ready, Retrying and Dead are then not known (0 here, and left out of
	// the JSON), while the rest of the status is. Absent when counted.
	QueueError string `json:"queue_error,omitempty"`
}

// CountsUnknown reports whether Ready, Retrying and Dead are not known:
// while the queues are rebuilt, or when they could not be counted.
func (s SinkStatus) CountsUnknown() bool { return s.Rebuilding || s.QueueError != "" }

// MarshalJSON leaves ready, retrying and dead out when they are not known
// ([SinkStatus.CountsUnknown]): a client that does not know the fields
// that say why must not read an unknown count as an empty queue.
func (s SinkStatus) MarshalJSON() ([]byte, error) {
	type plain SinkStatus // its fields, without this method
	if !s.CountsUnknown() {
		return json.Marshal(plain(s))
	}
	return json.Marshal(struct {
		plain
		// At a shallower depth than plain's, so they replace its fields.
		Ready    *int `json:"ready,omitempty"`
		Retrying *int `json:"retrying,omitempty"`
		Dead     *int `json:"dead,omitempty"`
	}{plain: plain(s)})
}

// ReloadResult is the answer of POST /v1/reload when the configuration was
// applied.
type ReloadResult struct {
	// Status is "reloaded".
	Status string `json:"status"`
	// RestartNeeded lists the keys the file changed that take effect only
	// at a restart (log.urls, admin.listen, ...): until then the daemon
	// runs with their old values. Absent when none.
	RestartNeeded []string `json:"restart_needed,omitempty"`
	// SocketOwned lists the listen keys the file changed ("server.listen",
	// "admin.listen") whose listener systemd passes (socket activation):
	// neither a reload nor a restart of pipelined changes them, the
	// socket unit's ListenStream= does. Absent when none.
	SocketOwned []string `json:"socket_owned,omitempty"`
}

// SinkPause is the answer of POST /v1/sinks/{sink}/pause and
// POST /v1/sinks/{sink}/resume.
type SinkPause struct {
	Sink   string `json:"sink"`
	Paused bool   `json:"paused"`
	// Changed is false when the sink already was in that state.
	Changed bool `json:"changed"`
}

// RetryNow is the answer of POST /v1/sinks/{sink}/retry-now.
type RetryNow struct {
	Sink string `json:"sink"`
	// Hastened counts the events of the sink that waited for a retry
	// (after a backoff or a Retry-After, from a failure before or since
	// the daemon's last start) and are due now.
	Hastened int `json:"hastened"`
	// Probing is true when the sink's circuit breaker was open and its
	// next probe was made to go now (while paused: at once when resumed).
	Probing bool `json:"probing"`
	// Paused is true when an operator holds the sink's delivery: its
	// retries are due, and wait for pipelined sinks resume.
	Paused bool `json:"paused"`
}

// ReadyCheck is one check behind GET /readyz.
type ReadyCheck struct {
	// Name is what is checked: log, listeners or writer.
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Error says why the check failed.
	Error string `json:"error,omitempty"`
}

// Readiness is the answer of GET /readyz: status "ready" (200) or "not
// ready" (503) with the first failed check's error. With ?verbose it lists
// every check.
type Readiness struct {
	Status string       `json:"status"`
	Error  string       `json:"error,omitempty"`
	Checks []ReadyCheck `json:"checks,omitempty"`
}

// SinkList is the answer of GET /v1/sinks.
type SinkList struct {
	Sinks []SinkStatus `json:"sinks"`
	// QueuesRebuild is how far the rebuild of the queues after the start
	// is; absent when no sink is [SinkStatus.Rebuilding].
	QueuesRebuild *QueuesRebuild `json:"queues_rebuild,omitempty"`
}

// QueuesRebuild is how far the daemon is in rebuilding the sinks' queues
// after its start: Read event records of about Total. Error is why the
// last attempt failed, when one did; the rebuild is then tried again, and
// nothing is delivered until it succeeds.
type QueuesRebuild struct {
	Read  int64  `json:"read"`
	Total int64  `json:"total"`
	Error string `json:"error,omitempty"`
}

// Event is an event as the API shows it.
type Event struct {
	ID         string            `json:"id"`
	Seq        uint64            `json:"seq"`
	Source     string            `json:"source"`
	ReceivedAt time.Time         `json:"received_at"`
	DedupKey   string            `json:"dedup_key,omitempty"`
	Auth       string            `json:"auth,omitempty"`
	Sinks      []string          `json:"sinks"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       json.RawMessage   `json:"body"`
	// Deliveries says what happened to the event at each sink (GET
	// /v1/events/{id} only). Absent when the log backend keeps no
	// delivery records (jetstream); [] for an event routed nowhere.
	Deliveries []Delivery `json:"deliveries,omitzero"`
}

// Delivery is the delivery record of one (event, sink) pair. State is
// "queued", "retrying", "delivered", "dead" or "dropped" (an operator
// dropped its dead letter: pipelined dlq drop), or "unknown" for an event
// written by a version that kept no records. Attempts counts every attempt
// over the event's life. The times are null until they happen; LastError
// is the latest failure's error, kept after a later success.
// NextAttemptAt is when a retrying delivery is due again, or when one the
// sink did not attempt (sdk.NotAttempted: not listed among the attempts,
// and its state stays what it was, queued when it was never attempted) is
// (null in any other state, and in a record written before it was kept): the earliest time,
// which a paused sink, an open breaker or a key held for
// delivery.order_key puts off.
type Delivery struct {
	Sink           string     `json:"sink"`
	Route          string     `json:"route"`
	State          string     `json:"state"`
	Attempts       int        `json:"attempts"`
	FirstAttemptAt *time.Time `json:"first_attempt_at"`
	LastAttemptAt  *time.Time `json:"last_attempt_at"`
	LastError      string     `json:"last_error"`
	DeliveredAt    *time.Time `json:"delivered_at"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	// DroppedAt is when an operator last dropped the event from the
	// sink's dead-letter queue. Absent if never, and after a drop of a
	// whole dead-letter queue on the jetstream backend, which cannot
	// record when (the state still says dropped).
	DroppedAt *time.Time `json:"dropped_at,omitempty"`
	// Held is true while the delivery is held back: behind an earlier
	// event of the sink's order_key, or skipped by an open breaker's
	// probes until they come back to it; next_attempt_at does not hold
	// then. Absent otherwise.
	Held bool `json:"held,omitempty"`
	// NotAttemptedReason is why the sink did not attempt the event at its
	// latest call (sdk.NotAttempted: a 503 with Retry-After stopped the
	// batch before it, the receiver was too slow for the call's time),
	// which last_error, an attempt's, does not say. Absent once a later
	// call attempted it.
	NotAttemptedReason string `json:"not_attempted_reason,omitempty"`
	// Failures are the latest failed attempts (at most
	// [pipeline.MaxFailures]), the oldest first; none for an event
	// delivered at its first attempt.
	Failures []Failure `json:"failures,omitempty"`
}

// Failure is one failed delivery attempt of a [Delivery].
type Failure struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Error   string    `json:"error"`
}

// EventList is the answer of GET /v1/events. Next, when not empty, is the
// after= of the next page.
type EventList struct {
	Events []Event `json:"events"`
	Next   string  `json:"next,omitempty"`
}

// ParseTime reads a time as the API and the CLI take it: RFC 3339, or a
// duration ago ("90m", "1h") counted back from now. Empty gives zero.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2025-03-14T15:09:26Z) or a duration ago (1h)", s)
}

// DeadLetter is a dead-letter entry as the API shows it.
type DeadLetter struct {
	ID         string          `json:"id"`
	Seq        uint64          `json:"seq"`
	Source     string          `json:"source"`
	ReceivedAt time.Time       `json:"received_at"`
	Route      string          `json:"route"`
	Attempts   int             `json:"attempts"`
	Error      string          `json:"error"`
	FailedAt   time.Time       `json:"failed_at"`
	Payload    json.RawMessage `json:"payload,omitempty"`
}

// DeadLetterList is the answer of GET /v1/sinks/{sink}/dlq.
type DeadLetterList struct {
	Sink        string       `json:"sink"`
	DeadLetters []DeadLetter `json:"dead_letters"`
	Next        string       `json:"next,omitempty"`
}

// DeadLetterRequest is the body of the DLQ retry and drop calls: ids, or
// all, not both; and of the DLQ add call: ids, or all for the queue of a
// sink removed from the configuration ([GiveUpAll]), not both, and the
// reason the operator gives (kept in each dead letter's error).
type DeadLetterRequest struct {
	IDs    []string `json:"ids,omitempty"`
	All    bool     `json:"all,omitempty"`
	Reason string   `json:"reason,omitempty"`
}

// DeadLetterResult answers the DLQ retry, drop and add calls. Count is how
// many entries were retried, dropped or given up on; IDs names them, but
// for an add with all, where it is empty (a queue can hold millions), and
// a retry or drop with all, where it names the first [MaxListedIDs];
// NotFound lists the ids asked for that are not in the sink's dead-letter
// queue (retry, drop) or not waiting in its queue (add).
type DeadLetterResult struct {
	Sink     string   `json:"sink"`
	Action   string   `json:"action"` // "retry", "drop" or "add"
	Count    int      `json:"count"`
	IDs      []string `json:"ids"`
	NotFound []string `json:"not_found,omitempty"`
	// IDsOmitted counts the events acted on that IDs does not name: a
	// retry or drop of a whole dead-letter queue names the first
	// [MaxListedIDs].
	IDsOmitted int `json:"ids_omitted,omitempty"`
}

// ReplayRequest is the body of POST /v1/replay. Since is required. Only the
// events that were routed to Sink are replayed, unless AllEvents.
type ReplayRequest struct {
	Sink      string `json:"sink"`
	Since     string `json:"since"`
	Until     string `json:"until,omitempty"`
	Source    string `json:"source,omitempty"`
	When      string `json:"when,omitempty"`
	AllEvents bool   `json:"all_events,omitempty"`
}

// ReplayProgress is one line of the NDJSON answer of POST /v1/replay:
// progress lines while it runs, then one with Done (or Error) set.
// Scanned counts the events looked at, Matched those that passed the
// filters, Enqueued those put in the queue, and AlreadyQueued those left
// alone because the queue still held them: waiting for a delivery, or in
// the sink's dead-letter queue. InDeadLetterQueue counts, of those, the
// ones in the dead-letter queue: a replay does not take them out of it
// (`pipelined dlq retry` does); AlreadyQueued - InDeadLetterQueue wait
// for a delivery. Matched is Enqueued + AlreadyQueued. At is the
// ReceivedAt of the last event looked at, so a client can draw progress
// from Since to Until.
type ReplayProgress struct {
	Scanned           int       `json:"scanned"`
	Matched           int       `json:"matched"`
	Enqueued          int       `json:"enqueued"`
	AlreadyQueued     int       `json:"already_queued"`
	InDeadLetterQueue int       `json:"in_dead_letter_queue"`
	At                time.Time `json:"at,omitzero"`
	Since             time.Time `json:"since"`
	Until             time.Time `json:"until"`
	Done              bool      `json:"done,omitempty"`
	Error             string    `json:"error,omitempty"`
}

// Rejection is a rejected request as GET /v1/rejections shows it.
type Rejection struct {
	ID         string            `json:"id"`
	Source     string            `json:"source"`
	ReceivedAt time.Time         `json:"received_at"`
	Status     int               `json:"status"`
	Reason     string            `json:"reason"`
	Violations []string          `json:"violations,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	// Body is the start of the body as text (at most 8 KiB); Truncated
	// says it was cut, BodySize is its full length (-1: unknown).
	Body       string `json:"body"`
	Truncated  bool   `json:"truncated,omitempty"`
	BodySize   int64  `json:"body_size"`
	RemoteAddr string `json:"remote_addr,omitempty"`
}

// RejectionList is the answer of GET /v1/rejections.
type RejectionList struct {
	Rejections []Rejection `json:"rejections"`
	Next       string      `json:"next,omitempty"`
}
