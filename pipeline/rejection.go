package pipeline

import (
	"context"
	"time"
)

// Rejection is a request that ingest refused (401, 400, 413, 415, 422),
// or acknowledged without storing it (200, the source's ignore rule),
// kept for a while so that an operator can see what a sender got wrong.
// It never enters a sink queue. badgerlog stores it as JSON by these
// field names: renaming a field changes its log's format.
type Rejection struct {
	// ID identifies the rejection in its log; [RejectionLog.Reject] sets it.
	ID string
	// Source is the name of the [[source]] the request was sent to.
	Source string
	// ReceivedAt is when the request was read, in UTC.
	ReceivedAt time.Time
	// Status is the HTTP status of the answer; Reason its one-line reason.
	Status int
	Reason string
	// Violations lists what a JSON Schema found wrong (422 only).
	Violations []string
	// Headers are the request headers as events keep them: lower-case
	// names, without the ones that carry credentials.
	Headers map[string]string
	// Body is the start of the request body; Truncated reports that it was
	// cut, and BodySize is its full length when known (-1 when not).
	Body      []byte
	Truncated bool
	BodySize  int64
	// RemoteAddr is the peer's address.
	RemoteAddr string
	// Keep is how long the log keeps the rejection after ReceivedAt.
	Keep time.Duration
	// KeepMax, when more than 0, bounds the [Rejection.Size] of all the
	// kept rejections of Source (keep_rejected_max): [RejectionLog.Reject]
	// drops the oldest until they fit.
	KeepMax int64
}

// Size is what r counts for against [Rejection.KeepMax]: its body,
// headers, reason and violations, plus a fixed 256 bytes for the rest.
func (r *Rejection) Size() int64 {
	n := 256 + len(r.Body) + len(r.Reason) + len(r.Source) + len(r.RemoteAddr)
	for k, v := range r.Headers {
		n += len(k) + len(v)
	}
	for _, v := range r.Violations {
		n += len(v)
	}
	return int64(n)
}

// RejectionFilter selects rejections for [RejectionLog.Rejections]. Its
// zero value selects every rejection still kept.
type RejectionFilter struct {
	// Source selects the rejections of one [[source]].
	Source string
	// Since selects rejections with ReceivedAt >= Since.
	Since time.Time
	// After is the cursor a previous call returned as next.
	After string
	// Limit bounds the rejections returned; 0 means 100.
	Limit int
}

// RejectionLog keeps rejected requests apart from events, in their own
// keyspace, each for its [Rejection.Keep]. It is an optional capability
// of a [Log], found by type assertion: a log without it only lets ingest
// count rejections. Writes need no durability guarantee (no fsync per
// call); callers write them off the request path.
type RejectionLog interface {
	// Reject stores r until r.ReceivedAt + r.Keep. When r.KeepMax > 0 it
	// then drops the oldest rejections of r.Source until their sizes add
	// up to at most r.KeepMax, and returns how many it dropped (r itself
	// is dropped, and counted, when it is larger than r.KeepMax). It
	// returns an error wrapping [ErrClosed] after Close.
	Reject(ctx context.Context, r Rejection) (dropped int, err error)

	// Rejections lists the kept rejections that match f, by source and
	// then by time, at most f.Limit of them. next is the cursor to pass as
	// f.After for the following page, or "" when there is no more. An
	// After that this log did not return gives an error wrapping
	// [ErrBadCursor]. Expired rejections are never listed.
	Rejections(ctx context.Context, f RejectionFilter) (rs []Rejection, next string, err error)
}
