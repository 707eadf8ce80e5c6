package logtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pipelined/pipelined/pipeline"
)

// The subtests of Run, in its order.

func testAppendReturnsIDs(t *testing.T, l pipeline.Log) {
	es := []pipeline.Entry{entry("a-1", sinkA), entry("a-2"), dedupEntry("a-3", "k3", hour, sinkA, sinkB)}
	got := mustAppend(t, l, es...)
	for i, a := range got {
		want := pipeline.Appended{ID: es[i].Event.ID}
		if a != want {
			t.Errorf("Append(...)[%d] = %+v, want %+v", i, a, want)
		}
	}
	if got := mustAppend(t, l); len(got) != 0 {
		t.Errorf("Append(no entries) = %+v, want none", got)
	}
}

func testEventRoundTrip(t *testing.T, l pipeline.Log) {
	full := event("rt-full")
	full.TraceParent, full.TraceState = testTraceParent, "vendor=abc"
	bare := pipeline.Event{ID: "rt-bare", Source: source2, ReceivedAt: receivedAt.Add(time.Nanosecond), Body: []byte(`{}`), Auth: "none"}
	local := event("rt-local")
	local.ReceivedAt = receivedAt.In(time.FixedZone("IST", 5*3600+1800))
	mustAppend(t, l,
		pipeline.Entry{Event: full, Targets: []pipeline.Target{{Sink: sinkA}}},
		pipeline.Entry{Event: bare},
		pipeline.Entry{Event: local, Targets: []pipeline.Target{{Sink: sinkB}}},
	)
	for _, want := range []pipeline.Event{full, bare, local} {
		mustEvent(t, l, want)
	}
	// The delivery carries the trace context too: a retry, after a restart
	// as well, joins the trace the event was accepted in.
	ds := mustFetch(t, l.Queue(sinkA), 1)
	if d := eventDiff(ds[0].Event, full); d != "" {
		t.Errorf("Fetch after appending %q: Delivery.Event: %s", full.ID, d)
	}
}

// testTraceParent is a W3C traceparent, as ingest stores it with an event.
const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// testAppendCopiesInput: a target's payload is the log's own once Append
// returns. (The event's Body and Headers may be kept: see [pipeline.Log].)
func testAppendCopiesInput(t *testing.T, l pipeline.Log) {
	e := entry("copy-1", sinkA)
	e.Targets[0].Payload = []byte(`{"text":"hi"}`)
	mustAppend(t, l, e)
	e.Targets[0].Payload[0] = 'X'
	mustEvent(t, l, event("copy-1"))
	ds := mustFetch(t, l.Queue(sinkA), 1)
	if got := string(ds[0].Payload); got != `{"text":"hi"}` {
		t.Errorf("Delivery.Payload after the caller changed its slice = %q, want %q", got, `{"text":"hi"}`)
	}
}

func testNoTargets(t *testing.T, l pipeline.Log) {
	mustAppend(t, l, entry("nt-1"))
	mustEvent(t, l, event("nt-1"))
	for _, s := range []string{sinkA, sinkB} {
		q := l.Queue(s)
		wantStats(t, q, pipeline.QueueStats{})
		fetchNone(t, q)
	}
}

func testEventNotFound(t *testing.T, l pipeline.Log) {
	wantNotFound(t, l, "nope")
	mustAppend(t, l, entry("nf-1", sinkA))
	wantNotFound(t, l, "nope")
	wantNotFound(t, l, "")
}

// testEventIngestIDs: events with ids as ingest makes them (UUIDv7s, many
// in one millisecond), over several appends, are each found by id; an id
// of the same milliseconds that was not appended is not.
func testEventIngestIDs(t *testing.T, l pipeline.Log) {
	var all []pipeline.Event
	for range 3 {
		var es []pipeline.Entry
		for range 20 {
			e := entry(uuid.Must(uuid.NewV7()).String(), sinkA)
			es = append(es, e)
			all = append(all, e.Event)
		}
		mustAppend(t, l, es...)
	}
	for _, want := range all {
		mustEvent(t, l, want)
	}
	wantNotFound(t, l, all[0].ID[:24]+"ffffffffffff")
}

func testDedupAcrossAppends(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	mustAppend(t, l, dedupEntry("dd-1", "call-1", hour, sinkA))
	for _, id := range []string{"dd-2", "dd-3"} {
		got := mustAppend(t, l, dedupEntry(id, "call-1", hour, sinkA, sinkB))
		if want := (pipeline.Appended{ID: "dd-1", Duplicate: true}); got[0] != want {
			t.Errorf("Append(%s with the key of dd-1) = %+v, want %+v", id, got[0], want)
		}
		wantNotFound(t, l, id)
	}
	wantStats(t, q, pipeline.QueueStats{Ready: 1})
	wantStats(t, l.Queue(sinkB), pipeline.QueueStats{})
	wantDeliveries(t, "Fetch", mustFetch(t, q, 1), []string{"dd-1"}, 1)
	fetchNone(t, q)
}

func testDedupWithinOneAppend(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	got := mustAppend(t, l,
		dedupEntry("dw-1", "call-1", hour, sinkA),
		dedupEntry("dw-2", "call-2", hour, sinkA),
		dedupEntry("dw-3", "call-1", hour, sinkA),
	)
	want := []pipeline.Appended{{ID: "dw-1"}, {ID: "dw-2"}, {ID: "dw-1", Duplicate: true}}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Append(...)[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	wantNotFound(t, l, "dw-3")
	wantStats(t, q, pipeline.QueueStats{Ready: 2})
	wantDeliveries(t, "Fetch", mustFetch(t, q, 2), []string{"dw-1", "dw-2"}, 1)
}

func testDedupOtherSource(t *testing.T, l pipeline.Log) {
	other := dedupEntry("ds-2", "call-1", hour, sinkA)
	other.Event.Source = source2
	got := mustAppend(t, l, dedupEntry("ds-1", "call-1", hour, sinkA), other)
	for i, id := range []string{"ds-1", "ds-2"} {
		if want := (pipeline.Appended{ID: id}); got[i] != want {
			t.Errorf("Append(same key, sources %q and %q)[%d] = %+v, want %+v", source, source2, i, got[i], want)
		}
	}
	wantStats(t, l.Queue(sinkA), pipeline.QueueStats{Ready: 2})
}

func testDedupEmptyKey(t *testing.T, l pipeline.Log) {
	got := mustAppend(t, l, dedupEntry("de-1", "", hour, sinkA), dedupEntry("de-2", "", hour, sinkA))
	got = append(got, mustAppend(t, l, dedupEntry("de-3", "", hour, sinkA))...)
	for i, id := range []string{"de-1", "de-2", "de-3"} {
		if want := (pipeline.Appended{ID: id}); got[i] != want {
			t.Errorf("Append(empty dedup key) %d = %+v, want %+v", i, got[i], want)
		}
	}
	wantStats(t, l.Queue(sinkA), pipeline.QueueStats{Ready: 3})
}

// testDedupWindowExpires uses a 1 s window and waits 2.5 s: an implementation
// whose expiry counts whole seconds may keep a key up to a second past its
// window or drop it up to a second early.
func testDedupWindowExpires(t *testing.T, l pipeline.Log) {
	mustAppend(t, l, dedupEntry("dx-1", "call-1", time.Second, sinkA))
	time.Sleep(2500 * time.Millisecond)
	got := mustAppend(t, l, dedupEntry("dx-2", "call-1", hour, sinkA))
	if want := (pipeline.Appended{ID: "dx-2"}); got[0] != want {
		t.Fatalf("Append(same key after the window) = %+v, want %+v", got[0], want)
	}
	// The new event starts a new window.
	got = mustAppend(t, l, dedupEntry("dx-3", "call-1", hour, sinkA))
	if want := (pipeline.Appended{ID: "dx-2", Duplicate: true}); got[0] != want {
		t.Errorf("Append(same key inside the new window) = %+v, want %+v", got[0], want)
	}
	wantDeliveries(t, "Fetch", mustFetch(t, l.Queue(sinkA), 2), []string{"dx-1", "dx-2"}, 1)
}

func testRouteOneSinkOnly(t *testing.T, l pipeline.Log) {
	mustAppend(t, l, entry("r1-1", sinkA))
	wantStats(t, l.Queue(sinkA), pipeline.QueueStats{Ready: 1})
	wantStats(t, l.Queue(sinkB), pipeline.QueueStats{})
	fetchNone(t, l.Queue(sinkB))
	wantDeliveries(t, "Fetch(sink-a)", mustFetch(t, l.Queue(sinkA), 1), []string{"r1-1"}, 1)
}

func testRouteFanOut(t *testing.T, l pipeline.Log) {
	mustAppend(t, l, entry("fo-1", sinkA, sinkB), entry("fo-2", sinkB))
	qa, qb := l.Queue(sinkA), l.Queue(sinkB)
	wantStats(t, qa, pipeline.QueueStats{Ready: 1})
	wantStats(t, qb, pipeline.QueueStats{Ready: 2})
	da := mustFetch(t, qa, 1)
	db := mustFetch(t, qb, 2)
	wantDeliveries(t, "Fetch(sink-a)", da, []string{"fo-1"}, 1)
	wantDeliveries(t, "Fetch(sink-b)", db, []string{"fo-1", "fo-2"}, 1)
	if da[0].Seq != db[0].Seq {
		t.Errorf("Seq of fo-1 = %d in sink-a and %d in sink-b, want the event's one Seq in both", da[0].Seq, db[0].Seq)
	}
	if da[0].Route != "route-"+sinkA || db[0].Route != "route-"+sinkB {
		t.Errorf("Routes of fo-1 = %q, %q, want %q, %q", da[0].Route, db[0].Route, "route-"+sinkA, "route-"+sinkB)
	}
}

func testRoutePayload(t *testing.T, l pipeline.Log) {
	payload := []byte(`{"text":"Interested lead from +91"}`)
	e := entry("pl-1")
	e.Targets = []pipeline.Target{
		{Sink: sinkA, Route: "interested-leads", Payload: payload},
		{Sink: sinkB, Route: "archive-all"},
	}
	mustAppend(t, l, e)
	da := mustFetch(t, l.Queue(sinkA), 1)[0]
	db := mustFetch(t, l.Queue(sinkB), 1)[0]
	if da.Route != "interested-leads" || string(da.Payload) != string(payload) {
		t.Errorf("Fetch(sink-a) Route, Payload = %q, %q, want %q, %q", da.Route, da.Payload, "interested-leads", payload)
	}
	if db.Route != "archive-all" || len(db.Payload) != 0 {
		t.Errorf("Fetch(sink-b) Route, Payload = %q, %q, want %q, nil", db.Route, db.Payload, "archive-all")
	}
}

func testRouteTargetErr(t *testing.T, l pipeline.Log) {
	e := entry("te-1")
	e.Targets = []pipeline.Target{
		{Sink: sinkA, Route: "bad-transform", Err: "transform: undefined field lead_status"},
		{Sink: sinkB, Route: "archive-all"},
	}
	before := time.Now()
	mustAppend(t, l, e, entry("te-2", sinkA))
	qa := l.Queue(sinkA)
	wantStats(t, qa, pipeline.QueueStats{Ready: 1, Dead: 1})
	wantStats(t, l.Queue(sinkB), pipeline.QueueStats{Ready: 1})
	wantDeliveries(t, "Fetch(sink-a)", mustFetch(t, qa, 1), []string{"te-2"}, 1)
	wantDeliveries(t, "Fetch(sink-b)", mustFetch(t, l.Queue(sinkB), 1), []string{"te-1"}, 1)
	mustEvent(t, l, event("te-1"))

	dl := mustDeadLetters(t, qa, 0, 10)
	if len(dl) != 1 {
		t.Fatalf("DeadLetters(0, 10) returned %d, want 1", len(dl))
	}
	d := dl[0]
	if d.Event.ID != "te-1" || d.Route != "bad-transform" || d.Err != e.Targets[0].Err || d.Attempts != 0 {
		t.Errorf("DeadLetters(0, 10)[0] ID, Route, Err, Attempts = %q, %q, %q, %d, want %q, %q, %q, 0",
			d.Event.ID, d.Route, d.Err, d.Attempts, "te-1", "bad-transform", e.Targets[0].Err)
	}
	if diff := eventDiff(d.Event, event("te-1")); diff != "" {
		t.Errorf("DeadLetters(0, 10)[0].Event: %s", diff)
	}
	wantFailedAt(t, d, before)
}

func wantFailedAt(t *testing.T, d pipeline.DeadLetter, before time.Time) {
	t.Helper()
	// One second of slack: an implementation may keep whole seconds.
	if d.FailedAt.Before(before.Add(-time.Second)) || d.FailedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("DeadLetter(%s).FailedAt = %v, want between %v and now", d.Event.ID, d.FailedAt, before)
	}
}

func testFetchOrderAndMax(t *testing.T, l pipeline.Log) {
	all := ids("fm", 7)
	appendIDs(t, l, all[:3], sinkA)
	appendIDs(t, l, all[3:], sinkA)
	q := l.Queue(sinkA)
	first := mustFetch(t, q, 2)
	wantDeliveries(t, "Fetch(2)", first, all[:2], 1)
	second := mustFetch(t, q, 4)
	wantDeliveries(t, "Fetch(4)", second, all[2:6], 1)
	if second[0].Seq <= first[1].Seq {
		t.Errorf("Seq of the second Fetch %d <= %d of the first, want increasing Seq", second[0].Seq, first[1].Seq)
	}
	wantDeliveries(t, "Fetch(1)", mustFetch(t, q, 1), all[6:], 1)
	fetchNone(t, q)
}

func testFetchLeased(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	appendIDs(t, l, []string{"ls-1", "ls-2"}, sinkA)
	wantDeliveries(t, "Fetch(1)", mustFetch(t, q, 1), []string{"ls-1"}, 1)
	wantDeliveries(t, "second Fetch(1)", mustFetch(t, q, 1), []string{"ls-2"}, 1)
	fetchNone(t, q)
	// Leased entries are still counted as Ready until settled.
	wantStats(t, q, pipeline.QueueStats{Ready: 2})
}

type fetchResult struct {
	ds  []pipeline.Delivery
	err error
	at  time.Time
}

// fetchAsync starts a Fetch in a goroutine that t waits for.
func fetchAsync(t *testing.T, ctx context.Context, q pipeline.Queue, max int) <-chan fetchResult {
	ch := make(chan fetchResult, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ds, err := q.Fetch(ctx, max)
		ch <- fetchResult{ds, err, time.Now()}
	}()
	t.Cleanup(wg.Wait)
	return ch
}

func awaitFetch(t *testing.T, ch <-chan fetchResult, what string) fetchResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitLong + time.Second):
		t.Fatalf("%s: Fetch did not return within %v", what, waitLong)
		return fetchResult{}
	}
}

func testFetchBlocksUntilAppend(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	ch := fetchAsync(t, ctxFor(t, waitLong), q, 10)
	time.Sleep(waitShort)
	select {
	case r := <-ch:
		t.Fatalf("Fetch on an empty queue = %s, %v, want it to block", seqIDs(r.ds), r.err)
	default:
	}
	mustAppend(t, l, entry("bl-other", sinkB))
	time.Sleep(waitShort / 3)
	select {
	case r := <-ch:
		t.Fatalf("Fetch(sink-a) after an append to sink-b = %s, %v, want it to block", seqIDs(r.ds), r.err)
	default:
	}
	mustAppend(t, l, entry("bl-1", sinkA))
	r := awaitFetch(t, ch, "after Append")
	if r.err != nil {
		t.Fatalf("Fetch woken by Append error = %v, want nil", r.err)
	}
	wantDeliveries(t, "Fetch woken by Append", r.ds, []string{"bl-1"}, 1)
}

func testFetchTimeout(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	fetchNone(t, q)
	appendIDs(t, l, []string{"to-1"}, sinkA)
	mustFetch(t, q, 1)
	fetchNone(t, q)

	ctx, cancel := context.WithCancel(context.Background())
	ch := fetchAsync(t, ctx, q, 10)
	time.Sleep(waitShort / 3)
	cancel()
	r := awaitFetch(t, ch, "after cancel")
	if !errors.Is(r.err, context.Canceled) || len(r.ds) != 0 {
		t.Errorf("Fetch after cancel = %s, %v, want nothing and context.Canceled", seqIDs(r.ds), r.err)
	}
}

func testSettleAck(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	appendIDs(t, l, ids("ak", 3), sinkA)
	ds := mustFetch(t, q, 2)
	mustSettle(t, q, ack(ds...)...)
	wantStats(t, q, pipeline.QueueStats{Ready: 1})
	wantDeliveries(t, "Fetch after Ack", mustFetch(t, q, 1), ids("ak", 3)[2:], 1)
	mustSettle(t, q)
	// Acked events stay in the log (they leave only by retention).
	mustEvent(t, l, event(ds[0].Event.ID))
	fetchNone(t, q)
}

func testSettleRetryDue(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	appendIDs(t, l, []string{"rd-1", "rd-2"}, sinkA)
	d1 := mustFetch(t, q, 1)
	wantDeliveries(t, "Fetch(1)", d1, []string{"rd-1"}, 1)
	if d1[0].LastError != "" {
		t.Errorf("first Fetch LastError = %q, want empty", d1[0].LastError)
	}
	mustSettle(t, q, pipeline.Settlement{Seq: d1[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(-time.Second), Err: "503 from sink"})
	wantStats(t, q, pipeline.QueueStats{Ready: 1, Retrying: 1})
	appendIDs(t, l, []string{"rd-3"}, sinkA)

	ds := mustFetch(t, q, 3)
	if got, want := deliveryIDs(ds), []string{"rd-1", "rd-2", "rd-3"}; !slices.Equal(got, want) {
		t.Fatalf("Fetch after Retry = %v, want %v (due retries first)", got, want)
	}
	if ds[0].Attempt != 2 || ds[0].LastError != "503 from sink" || ds[0].Seq != d1[0].Seq {
		t.Errorf("retried Fetch Seq, Attempt, LastError = %d, %d, %q, want %d, 2, %q", ds[0].Seq, ds[0].Attempt, ds[0].LastError, d1[0].Seq, "503 from sink")
	}
	if diff := eventDiff(ds[0].Event, event("rd-1")); diff != "" {
		t.Errorf("retried Fetch Event: %s", diff)
	}
	wantDeliveries(t, "Fetch after Retry, new entries", ds[1:], []string{"rd-2", "rd-3"}, 1)
	// A leased retry may be counted as Ready or Retrying, but once.
	if st, err := q.Stats(ctxFor(t, waitLong)); err != nil || st.Ready+st.Retrying != 3 || st.Dead != 0 {
		t.Errorf("Stats with a leased retry = %+v, %v, want Ready+Retrying 3, Dead 0", st, err)
	}

	// A second retry counts on.
	mustSettle(t, q, append(ack(ds[1:]...), pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, Err: "timeout"})...)
	wantStats(t, q, pipeline.QueueStats{Retrying: 1})
	d3 := mustFetch(t, q, 1)
	if d3[0].Event.ID != "rd-1" || d3[0].Attempt != 3 || d3[0].LastError != "timeout" {
		t.Fatalf("Fetch after second Retry = %s (Attempt %d, LastError %q), want rd-1, 3, %q", seqIDs(d3), d3[0].Attempt, d3[0].LastError, "timeout")
	}
	mustSettle(t, q, ack(d3...)...)
	wantStats(t, q, pipeline.QueueStats{})
}

func testSettleRetryLater(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	appendIDs(t, l, []string{"rl-1"}, sinkA)
	d := mustFetch(t, q, 1)[0]
	retryAt := time.Now().Add(time.Second)
	mustSettle(t, q, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: retryAt, Err: "429"})
	wantStats(t, q, pipeline.QueueStats{Retrying: 1})
	if time.Until(retryAt) > 2*waitShort { // a loaded machine may have used the second up
		fetchNone(t, q)
	}
	r := awaitFetch(t, fetchAsync(t, ctxFor(t, waitLong), q, 10), "waiting for a retry")
	if r.err != nil {
		t.Fatalf("Fetch waiting for a retry error = %v, want the retry", r.err)
	}
	if r.at.Before(retryAt.Add(-retryEarly)) {
		t.Errorf("Fetch returned the retry at %v, %v before its RetryAt", r.at, retryAt.Sub(r.at))
	}
	if len(r.ds) != 1 || r.ds[0].Seq != d.Seq || r.ds[0].Attempt != 2 || r.ds[0].LastError != "429" {
		t.Errorf("Fetch waiting for a retry = %s, want Seq %d with Attempt 2, LastError %q", seqIDs(r.ds), d.Seq, "429")
	}
}

func testSettleDead(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	all := ids("dl", 4)
	appendIDs(t, l, all, sinkA)
	ds := mustFetch(t, q, 4)
	before := time.Now()
	// dl-0000 dies after a retry; dl-0001 and dl-0003 on first delivery.
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, Err: "first"})
	re := mustFetch(t, q, 1)
	mustSettle(t, q,
		pipeline.Settlement{Seq: re[0].Seq, Outcome: pipeline.Dead, Err: "gave up"},
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Dead, Err: "400 bad payload"},
		pipeline.Settlement{Seq: ds[3].Seq, Outcome: pipeline.Dead, Err: "401 revoked"},
	)
	wantStats(t, q, pipeline.QueueStats{Ready: 1, Dead: 3})
	fetchNone(t, q)

	dl := mustDeadLetters(t, q, 0, 10)
	want := []struct {
		id       string
		err      string
		attempts int
	}{{all[0], "gave up", 2}, {all[1], "400 bad payload", 1}, {all[3], "401 revoked", 1}}
	if len(dl) != len(want) {
		t.Fatalf("DeadLetters(0, 10) returned %d, want %d", len(dl), len(want))
	}
	for i, w := range want {
		d := dl[i]
		if d.Event.ID != w.id || d.Err != w.err || d.Attempts != w.attempts || d.Route != "route-"+sinkA {
			t.Errorf("DeadLetters(0, 10)[%d] ID, Err, Attempts, Route = %q, %q, %d, %q, want %q, %q, %d, %q",
				i, d.Event.ID, d.Err, d.Attempts, d.Route, w.id, w.err, w.attempts, "route-"+sinkA)
		}
		if i > 0 && d.Seq <= dl[i-1].Seq {
			t.Errorf("DeadLetters(0, 10)[%d].Seq = %d after %d, want log order", i, d.Seq, dl[i-1].Seq)
		}
		if diff := eventDiff(d.Event, event(w.id)); diff != "" {
			t.Errorf("DeadLetters(0, 10)[%d].Event: %s", i, diff)
		}
		wantFailedAt(t, d, before)
	}
	page := mustDeadLetters(t, q, 0, 2)
	if len(page) != 2 || page[0].Seq != dl[0].Seq || page[1].Seq != dl[1].Seq {
		t.Errorf("DeadLetters(0, 2) returned %d entries, want the first 2 of 3", len(page))
	}
	rest := mustDeadLetters(t, q, dl[1].Seq, 10)
	if len(rest) != 1 || rest[0].Seq != dl[2].Seq {
		t.Errorf("DeadLetters(%d, 10) returned %d entries, want only Seq %d", dl[1].Seq, len(rest), dl[2].Seq)
	}
	if got := mustDeadLetters(t, q, dl[2].Seq, 10); len(got) != 0 {
		t.Errorf("DeadLetters(%d, 10) returned %d entries, want none", dl[2].Seq, len(got))
	}
	// A limit less than 1 lists nothing, on every backend.
	for _, limit := range []int{0, -1} {
		if got := mustDeadLetters(t, q, 0, limit); len(got) != 0 {
			t.Errorf("DeadLetters(0, %d) returned %d entries, want none", limit, len(got))
		}
	}
	mustEvent(t, l, event(all[1]))
}

func testSettleMixed(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	all := ids("mx", 4)
	appendIDs(t, l, all, sinkA)
	ds := mustFetch(t, q, 4)
	wantDeliveries(t, "Fetch(4)", ds, all, 1)
	wantStats(t, q, pipeline.QueueStats{Ready: 4})
	mustSettle(t, q,
		pipeline.Settlement{Seq: ds[2].Seq, Outcome: pipeline.Dead, Err: "permanent"},
		pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Ack},
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(-time.Millisecond), Err: "flaky"},
	)
	wantStats(t, q, pipeline.QueueStats{Ready: 1, Retrying: 1, Dead: 1})
	got := mustFetch(t, q, 1)
	if got[0].Event.ID != all[1] || got[0].Attempt != 2 {
		t.Fatalf("Fetch after mixed Settle = %s, want %s with Attempt 2", seqIDs(got), all[1])
	}
	mustSettle(t, q, ack(got[0], ds[3])...)
	wantStats(t, q, pipeline.QueueStats{Dead: 1})
	if dl := mustDeadLetters(t, q, 0, 10); len(dl) != 1 || dl[0].Event.ID != all[2] || dl[0].Err != "permanent" {
		t.Errorf("DeadLetters after mixed Settle = %+v, want %s with Err %q", dl, all[2], "permanent")
	}
}

func testQueuesIndependent(t *testing.T, l pipeline.Log) {
	all := ids("in", 3)
	appendIDs(t, l, all, sinkA, sinkB)
	qa, qb := l.Queue(sinkA), l.Queue(sinkB)
	da := mustFetch(t, qa, 3)
	mustSettle(t, qa,
		pipeline.Settlement{Seq: da[0].Seq, Outcome: pipeline.Ack},
		pipeline.Settlement{Seq: da[1].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(hour), Err: "later"},
		pipeline.Settlement{Seq: da[2].Seq, Outcome: pipeline.Dead, Err: "dead"},
	)
	wantStats(t, qa, pipeline.QueueStats{Retrying: 1, Dead: 1})
	wantStats(t, qb, pipeline.QueueStats{Ready: 3})
	if dl := mustDeadLetters(t, qb, 0, 10); len(dl) != 0 {
		t.Errorf("DeadLetters(sink-b) after a Dead in sink-a returned %d, want none", len(dl))
	}
	wantDeliveries(t, "Fetch(sink-b)", mustFetch(t, qb, 3), all, 1)
	fetchNone(t, qa)
	// A second handle on the same queue sees the same queue.
	wantStats(t, l.Queue(sinkA), pipeline.QueueStats{Retrying: 1, Dead: 1})
}

func testQueueNeverAppended(t *testing.T, l pipeline.Log) {
	mustAppend(t, l, entry("na-1", sinkA))
	q := l.Queue("never")
	wantStats(t, q, pipeline.QueueStats{})
	if dl := mustDeadLetters(t, q, 0, 10); len(dl) != 0 {
		t.Errorf("DeadLetters of a sink never appended to returned %d, want none", len(dl))
	}
	fetchNone(t, q)
}

// testConcurrent appends 2000 events in batches of 50 while one consumer
// per sink fetches and acks: each consumer must see every event once, in
// Seq order, which is append order.
func testConcurrent(t *testing.T, l pipeline.Log) {
	const (
		total = 2000
		batch = 50
	)
	all := ids("cc", total)
	ctx := ctxFor(t, 30*time.Second)
	sinks := []string{sinkA, sinkB}
	got := make([][]string, len(sinks))
	errs := make(chan error, len(sinks)+1)

	var wg sync.WaitGroup
	for i, s := range sinks {
		q := l.Queue(s)
		wg.Go(func() {
			var last uint64
			for len(got[i]) < total {
				ds, err := q.Fetch(ctx, 64)
				if err != nil {
					errs <- err
					return
				}
				for _, d := range ds {
					if d.Seq <= last {
						errs <- fmt.Errorf("%s: Seq %d of %s follows %d, want increasing Seq", s, d.Seq, d.Event.ID, last)
						return
					}
					last = d.Seq
					got[i] = append(got[i], d.Event.ID)
				}
				if err := q.Settle(ctx, ack(ds...)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < total; i += batch {
			es := make([]pipeline.Entry, batch)
			for j := range es {
				es[j] = entry(all[i+j], sinks...)
			}
			if _, err := l.Append(ctx, es); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent append and consume: %v", err)
	}
	for i, s := range sinks {
		if !slices.Equal(got[i], all) {
			t.Errorf("consumer of %s saw %d events (first %v), want all %d once in append order", s, len(got[i]), head(got[i]), total)
		}
		wantStats(t, l.Queue(s), pipeline.QueueStats{})
	}
}

func head(s []string) []string {
	return s[:min(len(s), 5)]
}

func testClosedCallsFail(t *testing.T, l pipeline.Log) {
	mustAppend(t, l, entry("cl-1", sinkA))
	q := l.Queue(sinkA)
	ds := mustFetch(t, q, 1)
	if err := l.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	ctx := ctxFor(t, waitLong)
	check := func(call string, err error) {
		t.Helper()
		if !errors.Is(err, pipeline.ErrClosed) {
			t.Errorf("%s after Close = %v, want error wrapping pipeline.ErrClosed", call, err)
		}
	}
	_, err := l.Append(ctx, []pipeline.Entry{entry("cl-2", sinkA)})
	check("Append", err)
	_, err = q.Fetch(ctx, 10)
	check("Fetch", err)
	check("Settle", q.Settle(ctx, ack(ds...)))
	_, err = q.Stats(ctx)
	check("Stats", err)
	_, err = q.DeadLetters(ctx, 0, 10)
	check("DeadLetters", err)
	_, err = l.Queue(sinkB).Fetch(ctx, 10)
	check("Fetch on a Queue taken after Close", err)
	_, err = l.Event(ctx, "cl-1")
	check("Event", err)
	_, _, err = l.Events(ctx, pipeline.EventFilter{})
	check("Events", err)
	_, err = q.RetryDead(ctx, nil)
	check("RetryDead", err)
	_, err = q.DropDead(ctx, nil)
	check("DropDead", err)
	_, err = q.Requeue(ctx, []pipeline.Requeue{{Seq: ds[0].Seq}})
	check("Requeue", err)
	_, err = q.Oldest(ctx)
	check("Oldest", err)
}

// testCloseReleasesFetch: a Fetch blocked when the log closes returns
// ErrClosed instead of waiting for its context.
func testCloseReleasesFetch(t *testing.T, l pipeline.Log) {
	ch := fetchAsync(t, ctxFor(t, waitLong), l.Queue(sinkA), 10)
	time.Sleep(waitShort / 3)
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	r := awaitFetch(t, ch, "after Close")
	if !errors.Is(r.err, pipeline.ErrClosed) || len(r.ds) != 0 {
		t.Errorf("blocked Fetch after Close = %s, %v, want error wrapping pipeline.ErrClosed", seqIDs(r.ds), r.err)
	}
	if waited := r.at.Sub(start); waited > 2*time.Second {
		t.Errorf("blocked Fetch returned %v after Close, want promptly", waited)
	}
}
