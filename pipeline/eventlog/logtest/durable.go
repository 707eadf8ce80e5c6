package logtest

import (
	"slices"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// RunDurable checks what a durable log keeps across a restart. open is called
// with the same directory more than once, each time after the previous log
// was closed, and must return the log stored there; the suite closes every
// log it opens. A durable implementation calls both [Run] and RunDurable.
//
// After a restart: leased entries that were not settled are ready again
// (leases are not durable), acked entries are gone, retries and dead letters
// keep their attempts and errors, dedup keys still dedup, new events get a
// Seq greater than every earlier one, and every event can still be read.
func RunDurable(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	t.Helper()
	t.Run("Reopen/Empty", func(t *testing.T) { testReopenEmpty(t, open) })
	t.Run("Reopen/Recovers", func(t *testing.T) { testReopenRecovers(t, open) })
	t.Run("Reopen/DeliveryRecords", func(t *testing.T) { testReopenDeliveryRecords(t, open) })
	t.Run("Reopen/Held", func(t *testing.T) { testReopenHeld(t, open) })
	t.Run("Reopen/TraceContext", func(t *testing.T) { testReopenTraceContext(t, open) })
	t.Run("Reopen/Abandoned", func(t *testing.T) { testReopenAbandoned(t, open) })
	t.Run("Reopen/HastenRetries", func(t *testing.T) { testReopenHastenRetries(t, open) })
	t.Run("Reopen/RetryAtZero", func(t *testing.T) { testReopenRetryAtZero(t, open) })
}

// testReopenRetryAtZero: a Retry without a RetryAt is due at once, before
// a restart and after it, and a retry-now walk neither misses nor trips on
// it (a zero time is no "never").
func testReopenRetryAtZero(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	dir := t.TempDir()
	l := reopen(t, open, dir)
	q := l.Queue(sinkA)
	mustAppend(t, l, entry("rz-1", sinkA), entry("rz-2", sinkA))
	ds := mustFetch(t, q, 2)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, Err: "no time given"},
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "an hour"})
	mustClose(t, l)
	l = reopen(t, open, dir)
	q = l.Queue(sinkA)
	wantStats(t, q, pipeline.QueueStats{Retrying: 2})
	got := mustFetch(t, q, 1)
	if got[0].Event.ID != "rz-1" || got[0].Attempt != 2 || got[0].LastError != "no time given" {
		t.Fatalf("Fetch after the restart = %s (attempt %d, %q), want rz-1 (attempt 2, its error): a Retry without RetryAt is due now", seqIDs(got), got[0].Attempt, got[0].LastError)
	}
	fetchNone(t, q) // rz-2 waits its hour
}

// testReopenTraceContext: an event's trace context survives a restart, so a
// redelivery after it joins the trace the event was accepted in.
func testReopenTraceContext(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	dir := t.TempDir()
	l := reopen(t, open, dir)
	e := entry("tc-1", sinkA)
	e.Event.TraceParent, e.Event.TraceState = testTraceParent, "vendor=abc"
	mustAppend(t, l, e)
	ds := mustFetch(t, l.Queue(sinkA), 1) // leased, never settled: ready again after the restart
	if ds[0].Event.TraceParent != testTraceParent {
		t.Fatalf("Fetch before the restart: TraceParent = %q, want %q", ds[0].Event.TraceParent, testTraceParent)
	}
	mustClose(t, l)
	l = reopen(t, open, dir)
	mustEvent(t, l, e.Event)
	ds = mustFetch(t, l.Queue(sinkA), 1)
	if d := eventDiff(ds[0].Event, e.Event); d != "" {
		t.Errorf("Fetch after the restart: Delivery.Event: %s", d)
	}
}

func reopen(t *testing.T, open func(t *testing.T, dir string) pipeline.Log, dir string) *onceLog {
	t.Helper()
	return openLog(t, func() pipeline.Log { return open(t, dir) })
}

func mustClose(t *testing.T, l pipeline.Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
}

func testReopenEmpty(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	dir := t.TempDir()
	mustClose(t, reopen(t, open, dir))
	l := reopen(t, open, dir)
	q := l.Queue(sinkA)
	wantStats(t, q, pipeline.QueueStats{})
	fetchNone(t, q)
	mustAppend(t, l, entry("em-1", sinkA))
	wantDeliveries(t, "Fetch after reopening an empty log", mustFetch(t, q, 1), []string{"em-1"}, 1)
}

func payloadOf(id string) []byte { return []byte(`{"n":"` + id + `"}`) }

func testReopenRecovers(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	dir := t.TempDir()
	e := ids("rc", 6) // rc-0000 also to sink-b, with a nil payload
	all := append(slices.Clone(e), "rc-key", "rc-none", "rc-bad")

	// First life: append, then settle some of what was fetched.
	l := reopen(t, open, dir)
	var es []pipeline.Entry
	for i, id := range e {
		en := entry(id, sinkA)
		if i == 0 {
			en.Targets = append(en.Targets, pipeline.Target{Sink: sinkB, Route: "route-" + sinkB})
		} else {
			en.Targets[0].Payload = payloadOf(id)
		}
		es = append(es, en)
	}
	keyed := dedupEntry("rc-key", "call-k", hour, sinkA)
	keyed.Targets[0].Payload = payloadOf("rc-key")
	bad := entry("rc-bad")
	bad.Targets = []pipeline.Target{{Sink: sinkA, Route: "bad-transform", Payload: payloadOf("rc-bad"), Err: "transform: nil map"}}
	mustAppend(t, l, es[:3]...)
	mustAppend(t, l, append(es[3:], keyed, entry("rc-none"), bad)...)

	qa := l.Queue(sinkA)
	ds := mustFetch(t, qa, 6)
	wantDeliveries(t, "Fetch(6)", ds, e, 1)
	before := time.Now()
	mustSettle(t, qa,
		pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Ack},
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(-time.Second), Err: "boom"},
		pipeline.Settlement{Seq: ds[2].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(hour), Err: "later"},
		pipeline.Settlement{Seq: ds[3].Seq, Outcome: pipeline.Dead, Err: "bad"},
	) // ds[4] and ds[5] stay leased; rc-key is never fetched.
	wantStats(t, qa, pipeline.QueueStats{Ready: 3, Retrying: 2, Dead: 2})
	dead := mustDeadLetters(t, qa, 0, 10)
	if len(dead) != 2 {
		t.Fatalf("DeadLetters(0, 10) before Close returned %d, want 2", len(dead))
	}
	maxSeq := max(ds[5].Seq, dead[1].Seq)
	mustClose(t, l)

	// Second life.
	l = reopen(t, open, dir)
	for _, id := range all {
		mustEvent(t, l, event(id))
	}
	qa, qb := l.Queue(sinkA), l.Queue(sinkB)
	wantStats(t, qa, pipeline.QueueStats{Ready: 3, Retrying: 2, Dead: 2})
	wantStats(t, qb, pipeline.QueueStats{Ready: 1})

	got := mustDeadLetters(t, qa, 0, 10)
	type dl struct {
		id, route, err string
		attempts       int
	}
	want := []dl{{e[3], "route-" + sinkA, "bad", 1}, {"rc-bad", "bad-transform", "transform: nil map", 0}}
	if len(got) != len(want) {
		t.Fatalf("DeadLetters(0, 10) after reopen returned %d, want %d", len(got), len(want))
	}
	for i, w := range want {
		d := got[i]
		if g := (dl{d.Event.ID, d.Route, d.Err, d.Attempts}); g != w {
			t.Errorf("DeadLetters(0, 10)[%d] after reopen = %+v, want %+v", i, g, w)
		}
		if d.Seq != dead[i].Seq || string(d.Payload) != string(payloadOf(w.id)) {
			t.Errorf("DeadLetters(0, 10)[%d] after reopen Seq, Payload = %d, %q, want %d, %q", i, d.Seq, d.Payload, dead[i].Seq, payloadOf(w.id))
		}
		if diff := eventDiff(d.Event, event(w.id)); diff != "" {
			t.Errorf("DeadLetters(0, 10)[%d].Event after reopen: %s", i, diff)
		}
		if diff := d.FailedAt.Sub(dead[i].FailedAt).Abs(); diff > time.Second {
			t.Errorf("DeadLetters(0, 10)[%d].FailedAt after reopen = %v, want %v as before", i, d.FailedAt, dead[i].FailedAt)
		}
	}
	wantFailedAt(t, got[0], before)

	dup := mustAppend(t, l, dedupEntry("rc-key2", "call-k", hour, sinkA))
	if w := (pipeline.Appended{ID: "rc-key", Duplicate: true}); dup[0] != w {
		t.Errorf("Append(key of rc-key) after reopen = %+v, want %+v", dup[0], w)
	}
	mustAppend(t, l, entry("rc-new", sinkA))

	// The due retry first, then what was leased or never fetched, in order.
	ds2 := mustFetch(t, qa, 5)
	wantIDs := []string{e[1], e[4], e[5], "rc-key", "rc-new"}
	if g := deliveryIDs(ds2); !slices.Equal(g, wantIDs) {
		t.Fatalf("Fetch after reopen = %v, want %v", g, wantIDs)
	}
	if r := ds2[0]; r.Seq != ds[1].Seq || r.Attempt != 2 || r.LastError != "boom" || string(r.Payload) != string(payloadOf(e[1])) {
		t.Errorf("retry after reopen Seq, Attempt, LastError, Payload = %d, %d, %q, %q, want %d, 2, %q, %q",
			r.Seq, r.Attempt, r.LastError, r.Payload, ds[1].Seq, "boom", payloadOf(e[1]))
	}
	for i, d := range ds2 {
		if d.Attempt < 1 {
			t.Errorf("Fetch after reopen [%d] (%s) Attempt = %d, want at least 1", i, d.Event.ID, d.Attempt)
		}
		if i > 1 && d.Seq <= ds2[i-1].Seq {
			t.Errorf("Fetch after reopen: Seq %d of %s follows %d, want log order", d.Seq, d.Event.ID, ds2[i-1].Seq)
		}
		if i > 0 && d.LastError != "" {
			t.Errorf("Fetch after reopen [%d] (%s) LastError = %q, want empty", i, d.Event.ID, d.LastError)
		}
	}
	if ds2[1].Seq != ds[4].Seq || ds2[2].Seq != ds[5].Seq {
		t.Errorf("Seqs of the unsettled entries after reopen = %d, %d, want %d, %d as before", ds2[1].Seq, ds2[2].Seq, ds[4].Seq, ds[5].Seq)
	}
	if s := ds2[4].Seq; s <= maxSeq {
		t.Errorf("Seq of an event appended after reopen = %d, want greater than %d of the first life", s, maxSeq)
	}
	fetchNone(t, qa) // rc-0002 waits an hour
	wantDeliveries(t, "Fetch(sink-b) after reopen", mustFetch(t, qb, 1), e[:1], 1)
	mustSettle(t, qa, ack(ds2...)...)
	wantStats(t, qa, pipeline.QueueStats{Retrying: 1, Dead: 2})
	mustClose(t, l)

	// Third life: settled work stays settled, Seq keeps growing.
	l = reopen(t, open, dir)
	qa = l.Queue(sinkA)
	wantStats(t, qa, pipeline.QueueStats{Retrying: 1, Dead: 2})
	wantStats(t, l.Queue(sinkB), pipeline.QueueStats{Ready: 1})
	fetchNone(t, qa)
	mustAppend(t, l, entry("rc-third", sinkA))
	last := mustFetch(t, qa, 1)
	if last[0].Event.ID != "rc-third" || last[0].Seq <= ds2[4].Seq {
		t.Errorf("Fetch in the third life = %s, want rc-third with Seq greater than %d", seqIDs(last), ds2[4].Seq)
	}
	for _, id := range append(all, "rc-new") {
		mustEvent(t, l, event(id))
	}
	wantNotFound(t, l, "rc-key2")
}

// testReopenDeliveryRecords: delivery records survive a restart.
func testReopenDeliveryRecords(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	dir := t.TempDir()
	start := time.Now()
	l := reopen(t, open, dir)
	deliveryLog(t, l)
	mustAppend(t, l, entry("rd-1", sinkA, sinkB))
	q := l.Queue(sinkA)
	ds := mustFetch(t, q, 1)
	retryAt := time.Now().Add(hour)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: retryAt, Err: "503"})
	mustClose(t, l)

	l = reopen(t, open, dir)
	wantRecords(t, deliveryLog(t, l), "rd-1", start,
		wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateRetrying, attempts: 1, lastErr: "503", attempted: true, next: retryAt},
		wantRecord{sink: sinkB, route: "route-" + sinkB, state: pipeline.StateQueued})
}

// testReopenHeld: a held entry stays held across a reopen (not fetched,
// counted), and is delivered with its attempts when released.
func testReopenHeld(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	dir := t.TempDir()
	l := reopen(t, open, dir)
	queueAs[pipeline.Holder](t, l, sinkA, "pipeline.Holders (no per-key order)")
	appendIDs(t, l, ids("rh", 2), sinkA)
	ds := mustFetch(t, l.Queue(sinkA), 2)
	mustSettle(t, l.Queue(sinkA), pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Hold}) // rh-0000 stays leased
	mustClose(t, l)

	l = reopen(t, open, dir)
	q := l.Queue(sinkA).(pipeline.Holder)
	wantDeliveries(t, "Fetch after reopening", mustFetch(t, q, 1), []string{"rh-0000"}, 1)
	fetchNone(t, q)
	if n, err := q.Release(ctxFor(t, waitLong), []uint64{ds[1].Seq}); err != nil || n != 1 {
		t.Fatalf("Release(rh-0001) after reopening = %d, %v; want 1, nil", n, err)
	}
	wantDeliveries(t, "Fetch after Release", mustFetch(t, q, 1), []string{"rh-0001"}, 1)
}
