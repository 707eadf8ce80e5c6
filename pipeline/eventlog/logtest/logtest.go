// Package logtest is the suite every [pipeline.Log] must pass: badgerlog,
// jetstreamlog, memlog and any later backend call it from an ordinary go
// test.
//
//	func TestLog(t *testing.T) {
//		logtest.Run(t, func(t *testing.T) pipeline.Log { return memlog.New() })
//	}
//
// [Run] checks the contract of one process's lifetime: append, dedup, routing,
// fetch, settle, dead letters, concurrency and Close, and what the admin API
// uses: listing events, retrying and dropping dead letters, and requeueing
// (replay), and the optional capabilities: rejections and per-sink delivery
// records ([pipeline.DeliveryLog]). A durable implementation
// also calls [RunDurable], which closes the log, opens the same directory again
// and checks what survived. The suite uses only the standard library, runs its
// subtests one after another (each on a fresh log), and takes a few seconds,
// most of it waiting for a dedup window to pass.
package logtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// Timing of the suite. A blocking call that must return is given waitLong; a
// call that must keep blocking is watched for waitShort.
const (
	waitLong  = 10 * time.Second
	waitShort = 150 * time.Millisecond
	// retryEarly is how much earlier than its RetryAt a retried entry may
	// be fetched: room for an implementation that stores times in
	// milliseconds.
	retryEarly = 5 * time.Millisecond
)

// Run runs the contract suite against the logs that open returns. open is
// called once per subtest and must return a new, empty log; the suite closes
// it (once) when the subtest ends. open may use t.TempDir and t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) pipeline.Log) {
	t.Helper()
	RunWith(t, open, Options{})
}

// Options tell the suite what a backend does not promise, so that it is
// not asked of it. The zero Options ask everything (Badger, memlog).
type Options struct {
	// RequeueMayFollow: an entry requeued below the queue's cursor may be
	// fetched after entries appended before the requeue, rather than
	// first (JetStream, where a replayed entry joins the end of the queue
	// and a replicated consumer may see it a moment after the publish was
	// answered). It must still be delivered, once.
	RequeueMayFollow bool
	// DropAllUnmarked: DropDead(nil) marks no delivery record
	// (JetStream, which purges a whole dead-letter queue in one call): a
	// record that said dead must then say dropped, but may have no
	// DroppedAt, and a dead letter that Append wrote (its route's
	// transform failed), which has no record, may then read as unknown.
	DropAllUnmarked bool
}

// RunWith is [Run] for a backend that makes fewer promises, as o says.
func RunWith(t *testing.T, open func(t *testing.T) pipeline.Log, o Options) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, l pipeline.Log)
	}{
		{"Append/ReturnsIDs", testAppendReturnsIDs},
		{"Append/EventRoundTrip", testEventRoundTrip},
		{"Append/CopiesInput", testAppendCopiesInput},
		{"Append/NoTargets", testNoTargets},
		{"Event/NotFound", testEventNotFound},
		{"Event/IngestIDs", testEventIngestIDs},
		{"Dedup/AcrossAppends", testDedupAcrossAppends},
		{"Dedup/WithinOneAppend", testDedupWithinOneAppend},
		{"Dedup/OtherSource", testDedupOtherSource},
		{"Dedup/EmptyKey", testDedupEmptyKey},
		{"Dedup/WindowExpires", testDedupWindowExpires},
		{"Route/OneSinkOnly", testRouteOneSinkOnly},
		{"Route/FanOut", testRouteFanOut},
		{"Route/PayloadAndRoute", testRoutePayload},
		{"Route/TargetErrGoesToDLQ", testRouteTargetErr},
		{"Fetch/LogOrderAndMax", testFetchOrderAndMax},
		{"Fetch/LeasedNotReturned", testFetchLeased},
		{"Fetch/BlocksUntilAppend", testFetchBlocksUntilAppend},
		{"Fetch/TimeoutWhenEmpty", testFetchTimeout},
		{"Settle/Ack", testSettleAck},
		{"Settle/RetryDue", testSettleRetryDue},
		{"Settle/RetryLater", testSettleRetryLater},
		{"Settle/Dead", testSettleDead},
		{"Settle/Mixed", testSettleMixed},
		{"Settle/RetryNotAttempted", testRetryNotAttempted},
		{"Queue/Independent", testQueuesIndependent},
		{"Queue/NeverAppended", testQueueNeverAppended},
		{"Concurrent/AppendAndConsume", testConcurrent},
		{"Events/LogOrderAndCursor", testEventsCursor},
		{"Events/Filter", testEventsFilter},
		{"Events/DedupKeyStored", testEventsDedupKey},
		{"Events/BadCursor", testEventsBadCursor},
		{"Events/NewestFirst", testEventsNewestFirst},
		{"DeadLetters/RetryAll", testRetryDeadAll},
		{"DeadLetters/RetrySome", testRetryDeadSome},
		{"DeadLetters/Drop", testDropDead},
		{"DeadLetters/DropSeqs", testDropDeadSeqs},
		{"Requeue/AfterAck", testRequeueAfterAck},
		{"Requeue/BelowCursor", func(t *testing.T, l pipeline.Log) { testRequeueBelowCursor(t, l, o) }},
		{"Requeue/NoDuplicates", func(t *testing.T, l pipeline.Log) { testRequeueNoDuplicates(t, l, false) }},
		{"Requeue/NoDuplicatesWithIDs", func(t *testing.T, l pipeline.Log) { testRequeueNoDuplicates(t, l, true) }},
		{"Requeue/MissingEvent", func(t *testing.T, l pipeline.Log) { testRequeueMissing(t, l, false) }},
		{"Requeue/MissingEventWithID", func(t *testing.T, l pipeline.Log) { testRequeueMissing(t, l, true) }},
		{"Queue/Oldest", testOldest},
		{"Deliveries/Lifecycle", testDeliveryLifecycle},
		{"Deliveries/TransformErr", testDeliveryTransformErr},
		{"Deliveries/Replay", testDeliveryReplay},
		{"Deliveries/NotFound", testDeliveryNotFound},
		{"Deliveries/Dropped", func(t *testing.T, l pipeline.Log) { testDeliveryDropped(t, l, o) }},
		{"Events/FilterState", testEventsFilterState},
		{"Rejections/RoundTrip", testRejectionsRoundTrip},
		{"Rejections/FilterAndCursor", testRejectionsFilter},
		{"Rejections/Expire", testRejectionsExpire},
		{"Rejections/Capped", testRejectionsCapped},
		{"Hold/UntilRelease", testHoldUntilRelease},
		{"Hold/SettleRelease", testSettleRelease},
		{"Hold/Hasten", testHasten},
		{"Hold/HastenNotAttempted", testHastenNotAttemptedSeq},
		{"Queue/HastenRetries", testHastenRetries},
		{"Queue/HastenWalkOnce", testHastenWalkOnce},
		{"Queue/HastenNotAttempted", testHastenNotAttempted},
		{"Queue/NextRetry", testNextRetry},
		{"Delivery/DeadNotAttempted", testDeadNotAttempted},
		{"Hold/Waiting", testWaiting},
		{"Hold/Record", testHoldRecord},
		{"Queue/Names", testQueueNames},
		{"Queue/Abandon", testAbandon},
		{"Close/CallsFail", testClosedCallsFail},
		{"Close/ReleasesBlockedFetch", testCloseReleasesFetch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, openLog(t, func() pipeline.Log { return open(t) }))
		})
	}
}

// onceLog closes the wrapped log at most once, so that a subtest may Close it
// and the cleanup still runs.
type onceLog struct {
	pipeline.Log
	once sync.Once
	err  error
}

func (l *onceLog) Close() error {
	l.once.Do(func() { l.err = l.Log.Close() })
	return l.err
}

// unwrap returns the log under the suite's onceLog, whose optional
// capabilities (DeliveryLog, RejectionLog, NewestFirstLog) the wrapper
// hides.
func unwrap(l pipeline.Log) pipeline.Log {
	if o, ok := l.(*onceLog); ok {
		return o.Log
	}
	return l
}

// openLog opens a log and closes it when t ends.
func openLog(t *testing.T, open func() pipeline.Log) *onceLog {
	t.Helper()
	inner := open()
	if inner == nil {
		t.Fatal("open returned a nil log")
	}
	l := &onceLog{Log: inner}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close = %v, want nil", err)
		}
	})
	return l
}

// Fixtures.

const (
	sinkA   = "sink-a"
	sinkB   = "sink-b"
	source  = "callkaro"
	source2 = "other-source"
	hour    = time.Hour
)

// receivedAt has nanoseconds, so a log that rounds times is caught.
var receivedAt = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func event(id string) pipeline.Event {
	return pipeline.Event{
		ID:         id,
		Source:     source,
		ReceivedAt: receivedAt,
		Headers:    map[string]string{"content-type": "application/json", "x-event-id": id},
		Body:       []byte(`{"event":"call_ended","data":{"callSid":"` + id + `"}}`),
		Auth:       "standard-webhooks",
	}
}

// entry is an entry for event id routed to each sink, without dedup.
func entry(id string, sinks ...string) pipeline.Entry {
	e := pipeline.Entry{Event: event(id)}
	for _, s := range sinks {
		e.Targets = append(e.Targets, pipeline.Target{Sink: s, Route: "route-" + s})
	}
	return e
}

// dedupEntry is entry with a dedup key and window.
func dedupEntry(id, key string, window time.Duration, sinks ...string) pipeline.Entry {
	e := entry(id, sinks...)
	e.DedupKey = key
	e.DedupWindow = window
	return e
}

// ids names n events with prefix.
func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// queueAs returns sink's queue of l as a T (one of the optional
// interfaces a queue may have), skipping t when it is not one: what names
// T's kind in the skip's message.
func queueAs[T any](t *testing.T, l pipeline.Log, sink, what string) T {
	t.Helper()
	q, ok := l.Queue(sink).(T)
	if !ok {
		t.Skip("the log's queues are not " + what)
	}
	return q
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Helpers that fail the test.

func mustAppend(t *testing.T, l pipeline.Log, entries ...pipeline.Entry) []pipeline.Appended {
	t.Helper()
	got, err := l.Append(ctxFor(t, waitLong), entries)
	if err != nil {
		t.Fatalf("Append(%d entries) error = %v, want nil", len(entries), err)
	}
	if len(got) != len(entries) {
		t.Fatalf("Append(%d entries) returned %d Appended, want %d", len(entries), len(got), len(entries))
	}
	return got
}

// appendIDs appends one entry per id, routed to sinks, in one call.
func appendIDs(t *testing.T, l pipeline.Log, idList []string, sinks ...string) {
	t.Helper()
	es := make([]pipeline.Entry, len(idList))
	for i, id := range idList {
		es[i] = entry(id, sinks...)
	}
	mustAppend(t, l, es...)
}

// mustFetch fetches exactly n entries, in as many calls as the log needs:
// Fetch may return fewer than max. No call may return more than it was asked.
func mustFetch(t *testing.T, q pipeline.Queue, n int) []pipeline.Delivery {
	t.Helper()
	ctx := ctxFor(t, waitLong)
	var got []pipeline.Delivery
	for len(got) < n {
		max := n - len(got)
		ds, err := q.Fetch(ctx, max)
		if err != nil {
			t.Fatalf("Fetch(%d) after %s error = %v, want %d more deliveries", max, seqIDs(got), err, max)
		}
		if len(ds) == 0 || len(ds) > max {
			t.Fatalf("Fetch(%d) returned %d deliveries, want 1..%d", max, len(ds), max)
		}
		got = append(got, ds...)
	}
	return got
}

// fetchNone checks that Fetch keeps blocking for waitShort and then returns
// the context's error and nothing.
func fetchNone(t *testing.T, q pipeline.Queue) {
	t.Helper()
	ds, err := q.Fetch(ctxFor(t, waitShort), 10)
	if len(ds) != 0 {
		t.Fatalf("Fetch with nothing ready = %s, want nothing", seqIDs(ds))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch with nothing ready error = %v, want context.DeadlineExceeded", err)
	}
}

func mustSettle(t *testing.T, q pipeline.Queue, s ...pipeline.Settlement) {
	t.Helper()
	if err := q.Settle(ctxFor(t, waitLong), s); err != nil {
		t.Fatalf("Settle(%d settlements) error = %v, want nil", len(s), err)
	}
}

func ack(ds ...pipeline.Delivery) []pipeline.Settlement {
	out := make([]pipeline.Settlement, len(ds))
	for i, d := range ds {
		out[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
	}
	return out
}

func wantStats(t *testing.T, q pipeline.Queue, want pipeline.QueueStats) {
	t.Helper()
	got, err := q.Stats(ctxFor(t, waitLong))
	if err != nil {
		t.Fatalf("Stats error = %v, want nil", err)
	}
	if got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func mustDeadLetters(t *testing.T, q pipeline.Queue, after uint64, limit int) []pipeline.DeadLetter {
	t.Helper()
	got, err := q.DeadLetters(ctxFor(t, waitLong), after, limit)
	if err != nil {
		t.Fatalf("DeadLetters(%d, %d) error = %v, want nil", after, limit, err)
	}
	return got
}

func mustEvent(t *testing.T, l pipeline.Log, want pipeline.Event) {
	t.Helper()
	got, err := l.Event(ctxFor(t, waitLong), want.ID)
	if err != nil {
		t.Fatalf("Event(%q) error = %v, want the event", want.ID, err)
	}
	if d := eventDiff(got, want); d != "" {
		t.Fatalf("Event(%q): %s", want.ID, d)
	}
}

func wantNotFound(t *testing.T, l pipeline.Log, id string) {
	t.Helper()
	got, err := l.Event(ctxFor(t, waitLong), id)
	if !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("Event(%q) = %+v, %v, want error wrapping pipeline.ErrNotFound", id, got, err)
	}
}

// wantDeliveries checks ids, attempts and event contents of ds, and that
// their Seqs increase.
func wantDeliveries(t *testing.T, what string, ds []pipeline.Delivery, wantIDs []string, attempt int) {
	t.Helper()
	if got := deliveryIDs(ds); !slices.Equal(got, wantIDs) {
		t.Fatalf("%s = %v, want %v", what, got, wantIDs)
	}
	for i, d := range ds {
		if d.Attempt != attempt {
			t.Errorf("%s[%d] (%s) Attempt = %d, want %d", what, i, d.Event.ID, d.Attempt, attempt)
		}
		if i > 0 && d.Seq <= ds[i-1].Seq {
			t.Errorf("%s: Seq %d of %s follows Seq %d, want increasing Seq", what, d.Seq, d.Event.ID, ds[i-1].Seq)
		}
		if diff := eventDiff(d.Event, event(d.Event.ID)); diff != "" {
			t.Errorf("%s[%d].Event: %s", what, i, diff)
		}
	}
}

func deliveryIDs(ds []pipeline.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Event.ID
	}
	return out
}

func seqIDs(ds []pipeline.Delivery) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%d:%s", d.Seq, d.Event.ID)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// eventDiff describes how got differs from want, or returns "". Nil and empty
// headers are equal; times are compared with time.Equal.
func eventDiff(got, want pipeline.Event) string {
	var d []string
	if got.ID != want.ID {
		d = append(d, fmt.Sprintf("ID = %q, want %q", got.ID, want.ID))
	}
	if got.Source != want.Source {
		d = append(d, fmt.Sprintf("Source = %q, want %q", got.Source, want.Source))
	}
	if !got.ReceivedAt.Equal(want.ReceivedAt) {
		d = append(d, fmt.Sprintf("ReceivedAt = %v, want %v", got.ReceivedAt, want.ReceivedAt))
	}
	if !maps.Equal(got.Headers, want.Headers) {
		d = append(d, fmt.Sprintf("Headers = %v, want %v", got.Headers, want.Headers))
	}
	if !bytes.Equal(got.Body, want.Body) {
		d = append(d, fmt.Sprintf("Body = %q, want %q", got.Body, want.Body))
	}
	if got.Auth != want.Auth {
		d = append(d, fmt.Sprintf("Auth = %q, want %q", got.Auth, want.Auth))
	}
	if got.TraceParent != want.TraceParent || got.TraceState != want.TraceState {
		d = append(d, fmt.Sprintf("TraceParent, TraceState = %q, %q, want %q, %q", got.TraceParent, got.TraceState, want.TraceParent, want.TraceState))
	}
	return strings.Join(d, "; ")
}
