package admin

import (
	"encoding/json"
	"fmt"
	"time"
)

// SinkStatus is one sink as /v1/sinks shows it.
type SinkStatus struct {
	Name string `json:"name"`
	// Plugin is the plugin's state: starting, running, backoff or stopped.
	Plugin    string `json:"plugin"`
	PID       int    `json:"pid,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Ready, Retrying and Dead count the sink's queue entries.
	Ready    int `json:"ready"`
	Retrying int `json:"retrying"`
	Dead     int `json:"dead"`
	// OldestAgeSeconds is how long ago the oldest event still waiting for
	// delivery (ready, in flight or retrying) was received; absent when
	// none waits. The handler fills it from [Options.Log] when it is 0.
	OldestAgeSeconds float64 `json:"oldest_age_seconds,omitempty"`
}

// SinkList is the answer of GET /v1/sinks.
type SinkList struct {
	Sinks []SinkStatus `json:"sinks"`
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
// "queued", "retrying", "delivered" or "dead" ("unknown" for an event
// written by a version that kept no records). Attempts counts every attempt
// over the event's life. The times are null until they happen; LastError
// is the latest failure's error, kept after a later success.
type Delivery struct {
	Sink           string     `json:"sink"`
	Route          string     `json:"route"`
	State          string     `json:"state"`
	Attempts       int        `json:"attempts"`
	FirstAttemptAt *time.Time `json:"first_attempt_at"`
	LastAttemptAt  *time.Time `json:"last_attempt_at"`
	LastError      string     `json:"last_error"`
	DeliveredAt    *time.Time `json:"delivered_at"`
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
// all, not both.
type DeadLetterRequest struct {
	IDs []string `json:"ids,omitempty"`
	All bool     `json:"all,omitempty"`
}

// DeadLetterResult answers the DLQ retry and drop calls. Count is how many
// entries were retried or dropped; IDs names them; NotFound lists the ids
// asked for that are not in the sink's dead-letter queue.
type DeadLetterResult struct {
	Sink     string   `json:"sink"`
	Action   string   `json:"action"` // "retry" or "drop"
	Count    int      `json:"count"`
	IDs      []string `json:"ids"`
	NotFound []string `json:"not_found,omitempty"`
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
// alone because the queue still held them. At is the ReceivedAt of the
// last event looked at, so a client can draw progress from Since to Until.
type ReplayProgress struct {
	Scanned       int       `json:"scanned"`
	Matched       int       `json:"matched"`
	Enqueued      int       `json:"enqueued"`
	AlreadyQueued int       `json:"already_queued"`
	At            time.Time `json:"at,omitzero"`
	Since         time.Time `json:"since"`
	Until         time.Time `json:"until"`
	Done          bool      `json:"done,omitempty"`
	Error         string    `json:"error,omitempty"`
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
