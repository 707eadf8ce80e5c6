package logtest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// Delivery records: an optional capability ([pipeline.DeliveryLog]).

// deliveryLog returns l as a [pipeline.DeliveryLog], skipping the test when
// the implementation keeps no delivery records; it first checks that such a
// log refuses a state filter with [pipeline.ErrNotSupported].
func deliveryLog(t *testing.T, l pipeline.Log) pipeline.DeliveryLog {
	t.Helper()
	dl, ok := unwrap(l).(pipeline.DeliveryLog)
	if !ok {
		_, _, err := l.Events(ctxFor(t, waitLong), pipeline.EventFilter{Sink: sinkA, State: pipeline.StateDead})
		if !errors.Is(err, pipeline.ErrNotSupported) {
			t.Fatalf("Events(State: dead) on a log without delivery records error = %v, want ErrNotSupported", err)
		}
		t.Skip("the log does not implement pipeline.DeliveryLog")
	}
	return dl
}

// wantRecord is what a test expects of one record; times are checked
// against the window [after, before] when wanted (non-zero after).
type wantRecord struct {
	sink, route, state string
	attempts           int
	lastErr            string
	attempted          bool      // first and last attempt times set
	delivered          bool      // DeliveredAt set
	next               time.Time // NextAttemptAt, exactly (zero: none)
	dueNow             bool      // NextAttemptAt set, in the window (a dead letter retried)
	dropped            bool      // DroppedAt set, in the window
	droppedUndated     bool      // with dropped: DroppedAt may also be zero (Options.DropAllUnmarked)
	notAttempted       string    // NotAttemptedReason
}

func mustDeliveries(t *testing.T, dl pipeline.DeliveryLog, id string) []pipeline.DeliveryRecord {
	t.Helper()
	rs, err := dl.Deliveries(ctxFor(t, waitLong), id)
	if err != nil {
		t.Fatalf("Deliveries(%s) error = %v, want nil", id, err)
	}
	return rs
}

func fmtRecords(rs []pipeline.DeliveryRecord) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "\n\t{%s %s %s attempts=%d err=%q first=%v last=%v delivered=%v next=%v dropped=%v not_attempted=%q}", r.Sink, r.Route, r.State,
			r.Attempts, r.LastError, r.FirstAttemptAt.Format(time.RFC3339Nano), r.LastAttemptAt.Format(time.RFC3339Nano),
			r.DeliveredAt.Format(time.RFC3339Nano), r.NextAttemptAt.Format(time.RFC3339Nano), r.DroppedAt.Format(time.RFC3339Nano), r.NotAttemptedReason)
	}
	return b.String()
}

// wantRecords checks the records of id against want, in order, and that
// every time lies in [since-1s, now+1s].
func wantRecords(t *testing.T, dl pipeline.DeliveryLog, id string, since time.Time, want ...wantRecord) []pipeline.DeliveryRecord {
	t.Helper()
	rs := mustDeliveries(t, dl, id)
	if len(rs) != len(want) {
		t.Fatalf("Deliveries(%s) = %s, want %d records", id, fmtRecords(rs), len(want))
	}
	lo, hi := since.Add(-time.Second), time.Now().Add(time.Second)
	in := func(at time.Time) bool { return !at.Before(lo) && !at.After(hi) }
	for i, w := range want {
		r := rs[i]
		bad := r.Sink != w.sink || r.Route != w.route || r.State != w.state || r.Attempts != w.attempts || r.LastError != w.lastErr ||
			r.NotAttemptedReason != w.notAttempted
		if w.attempted {
			bad = bad || !in(r.FirstAttemptAt) || !in(r.LastAttemptAt) || r.LastAttemptAt.Before(r.FirstAttemptAt)
		} else {
			bad = bad || !r.FirstAttemptAt.IsZero() || !r.LastAttemptAt.IsZero()
		}
		if w.delivered {
			bad = bad || !in(r.DeliveredAt)
		} else {
			bad = bad || !r.DeliveredAt.IsZero()
		}
		if w.dueNow {
			bad = bad || !in(r.NextAttemptAt)
		} else {
			bad = bad || !r.NextAttemptAt.Equal(w.next)
		}
		switch {
		case w.dropped && w.droppedUndated:
			bad = bad || !(r.DroppedAt.IsZero() || in(r.DroppedAt))
		case w.dropped:
			bad = bad || !in(r.DroppedAt)
		default:
			bad = bad || !r.DroppedAt.IsZero()
		}
		if bad {
			t.Errorf("Deliveries(%s)[%d] = %s, want %+v", id, i, fmtRecords(rs[i:i+1]), w)
		}
	}
	return rs
}

// testDeliveryLifecycle follows one event through queued, retrying,
// delivered at one sink and dead, retried, at another.
func testDeliveryLifecycle(t *testing.T, l pipeline.Log) {
	dl := deliveryLog(t, l)
	start := time.Now()
	mustAppend(t, l, entry("dr-1", sinkA, sinkB))
	queued := func(sink string) wantRecord {
		return wantRecord{sink: sink, route: "route-" + sink, state: pipeline.StateQueued}
	}
	wantRecords(t, dl, "dr-1", start, queued(sinkA), queued(sinkB))

	qa, qb := l.Queue(sinkA), l.Queue(sinkB)
	ds := mustFetch(t, qa, 1)
	wantRecords(t, dl, "dr-1", start, queued(sinkA), queued(sinkB)) // leased is still queued
	retryAt := time.Now().Add(-time.Millisecond)                    // due at once, and told from the attempt's time
	mustSettle(t, qa, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: retryAt, Err: "connection refused"})
	a1 := wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateRetrying, attempts: 1, lastErr: "connection refused", attempted: true, next: retryAt}
	first := wantRecords(t, dl, "dr-1", start, a1, queued(sinkB))[0].FirstAttemptAt

	ds = mustFetch(t, qa, 1)
	mustSettle(t, qa, ack(ds...)...)
	a2 := wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateDelivered, attempts: 2, lastErr: "connection refused", attempted: true, delivered: true}
	rs := wantRecords(t, dl, "dr-1", start, a2, queued(sinkB))
	if !rs[0].FirstAttemptAt.Equal(first) {
		t.Errorf("Deliveries(dr-1)[0].FirstAttemptAt = %v after a second attempt, want %v (the first's)", rs[0].FirstAttemptAt, first)
	}

	ds = mustFetch(t, qb, 1)
	mustSettle(t, qb, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Dead, Err: "410 gone"})
	b1 := wantRecord{sink: sinkB, route: "route-" + sinkB, state: pipeline.StateDead, attempts: 1, lastErr: "410 gone", attempted: true}
	wantRecords(t, dl, "dr-1", start, a2, b1)

	if n, err := qb.RetryDead(ctxFor(t, waitLong), nil); err != nil || n != 1 {
		t.Fatalf("RetryDead(nil) = %d, %v, want 1, nil", n, err)
	}
	b1.state, b1.dueNow = pipeline.StateRetrying, true
	wantRecords(t, dl, "dr-1", start, a2, b1) // attempts count the event's whole life
	ds = mustFetch(t, qb, 1)
	mustSettle(t, qb, ack(ds...)...)
	b1.state, b1.attempts, b1.delivered, b1.dueNow = pipeline.StateDelivered, 2, true, false
	wantRecords(t, dl, "dr-1", start, a2, b1)
}

// testDeliveryTransformErr: a target whose transform failed is dead at once,
// with the transform's error and no attempt.
func testDeliveryTransformErr(t *testing.T, l pipeline.Log) {
	dl := deliveryLog(t, l)
	e := entry("dt-1")
	e.Targets = []pipeline.Target{{Sink: sinkA, Route: "bad", Err: "transform: boom"}, {Sink: sinkB, Route: "ok"}}
	mustAppend(t, l, e)
	wantRecords(t, dl, "dt-1", time.Now(),
		wantRecord{sink: sinkA, route: "bad", state: pipeline.StateDead, lastErr: "transform: boom"},
		wantRecord{sink: sinkB, route: "ok", state: pipeline.StateQueued})
}

// testDeliveryReplay: a replay to a sink the event was not routed to adds
// its record after the routed ones; a replay of a delivered event makes it
// queued again and keeps its history.
func testDeliveryReplay(t *testing.T, l pipeline.Log) {
	dl := deliveryLog(t, l)
	start := time.Now()
	mustAppend(t, l, entry("dp-1", sinkA))
	qa := l.Queue(sinkA)
	ds := mustFetch(t, qa, 1)
	mustSettle(t, qa, ack(ds...)...)
	if n, err := l.Queue(sinkB).Requeue(ctxFor(t, waitLong), []pipeline.Requeue{{Seq: ds[0].Seq, Route: "replay"}}); err != nil || n != 1 {
		t.Fatalf("sink-b Requeue(dp-1) = %d, %v, want 1, nil", n, err)
	}
	if n, err := qa.Requeue(ctxFor(t, waitLong), []pipeline.Requeue{{Seq: ds[0].Seq, Route: "replay"}}); err != nil || n != 1 {
		t.Fatalf("sink-a Requeue(dp-1) = %d, %v, want 1, nil", n, err)
	}
	wantRecords(t, dl, "dp-1", start,
		wantRecord{sink: sinkA, route: "replay", state: pipeline.StateQueued, attempts: 1, attempted: true, delivered: true},
		wantRecord{sink: sinkB, route: "replay", state: pipeline.StateQueued})
}

func testDeliveryNotFound(t *testing.T, l pipeline.Log) {
	dl := deliveryLog(t, l)
	if _, err := dl.Deliveries(ctxFor(t, waitLong), "no-such-event"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Deliveries(no-such-event) error = %v, want ErrNotFound", err)
	}
}

// testEventsFilterState lists events by the state of their delivery to a
// sink, or to any sink.
func testEventsFilterState(t *testing.T, l pipeline.Log) {
	deliveryLog(t, l)
	appendIDs(t, l, []string{"fs-ok", "fs-dead", "fs-retry", "fs-new"}, sinkA)
	mustAppend(t, l, entry("fs-b", sinkB))
	qa := l.Queue(sinkA)
	ds := mustFetch(t, qa, 3)
	mustSettle(t, qa,
		pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Ack},
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Dead, Err: "bad"},
		pipeline.Settlement{Seq: ds[2].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(hour), Err: "later"})
	for _, tt := range []struct {
		sink, state string
		want        []string
	}{
		{sinkA, pipeline.StateDelivered, []string{"fs-ok"}},
		{sinkA, pipeline.StateDead, []string{"fs-dead"}},
		{sinkA, pipeline.StateRetrying, []string{"fs-retry"}},
		{sinkA, pipeline.StateQueued, []string{"fs-new"}},
		{sinkA, pipeline.StatePending, []string{"fs-retry", "fs-new"}},
		{sinkB, pipeline.StatePending, []string{"fs-b"}},
		{sinkB, pipeline.StateDead, nil},
		{"", pipeline.StatePending, []string{"fs-retry", "fs-new", "fs-b"}},
	} {
		t.Run(tt.sink+"/"+tt.state, func(t *testing.T) {
			got := infoIDs(mustEvents(t, l, pipeline.EventFilter{Sink: tt.sink, State: tt.state, Limit: 2}))
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("Events(Sink %q, State %q) = %v, want %v", tt.sink, tt.state, got, tt.want)
			}
		})
	}
	if _, _, err := l.Events(ctxFor(t, waitLong), pipeline.EventFilter{Sink: sinkA, State: "lost"}); err == nil {
		t.Errorf("Events(State: lost) error = nil, want an error naming the valid states")
	}
}

// testDeadNotAttempted: an entry settled Dead without being handed to the
// sink (an operator gave up on it) costs no attempt, in its dead letter or
// in its record, which keeps its failures; one never attempted is dead with
// no attempt at all.
func testDeadNotAttempted(t *testing.T, l pipeline.Log) {
	dl := deliveryLog(t, l)
	start := time.Now()
	mustAppend(t, l, entry("na-1", sinkA), entry("na-2", sinkA))
	q := l.Queue(sinkA)
	ds := mustFetch(t, q, 2)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "503"},
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Dead, Err: "given up", NotAttempted: true})
	ds = mustFetch(t, q, 1) // na-1, attempt 2
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Dead, Err: "given up: bad data", NotAttempted: true})
	rs := wantRecords(t, dl, "na-1", start,
		wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateDead, attempts: 1, lastErr: "given up: bad data", attempted: true})
	if len(rs[0].Failures) != 1 || rs[0].Failures[0].Err != "503" {
		t.Errorf("Deliveries(na-1) failures = %+v, want only the attempt's (503)", rs[0].Failures)
	}
	wantRecords(t, dl, "na-2", start,
		wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateDead, lastErr: "given up"})
	dead, err := q.DeadLetters(ctxFor(t, waitLong), 0, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("DeadLetters = %v, %v; want na-1 and na-2", dead, err)
	}
	for _, d := range dead {
		if want := map[string]int{"na-1": 1, "na-2": 0}[d.Event.ID]; d.Attempts != want {
			t.Errorf("dead letter %s: Attempts = %d, want %d (the give-up is no attempt)", d.Event.ID, d.Attempts, want)
		}
	}
}

// testDeliveryDropped: a dead letter an operator drops (one by its seq,
// then the rest at once) leaves its record dropped, with when, its
// attempts and its last error; the state filter tells dropped from dead;
// a replay queues the event again.
func testDeliveryDropped(t *testing.T, l pipeline.Log, o Options) {
	dl := deliveryLog(t, l)
	start := time.Now()
	appendIDs(t, l, []string{"dq-1", "dq-2"}, sinkA)
	bad := entry("dq-t") // dead at once: its transform failed
	bad.Targets = []pipeline.Target{{Sink: sinkA, Route: "bad", Err: "transform: boom"}}
	mustAppend(t, l, bad)
	q := l.Queue(sinkA)
	ds := mustFetch(t, q, 2)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Dead, Err: "410 gone"},
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Dead, Err: "410 gone"})

	if n, err := q.DropDead(ctxFor(t, waitLong), []uint64{ds[0].Seq}); err != nil || n != 1 {
		t.Fatalf("DropDead([dq-1]) = %d, %v, want 1, nil", n, err)
	}
	dead := wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateDead, attempts: 1, lastErr: "410 gone", attempted: true}
	dropped := dead
	dropped.state, dropped.dropped = pipeline.StateDropped, true
	wantRecords(t, dl, "dq-1", start, dropped)
	wantRecords(t, dl, "dq-2", start, dead)
	for _, tt := range []struct {
		state string
		want  []string
	}{{pipeline.StateDropped, []string{"dq-1"}}, {pipeline.StateDead, []string{"dq-2", "dq-t"}}} {
		if got := infoIDs(mustEvents(t, l, pipeline.EventFilter{Sink: sinkA, State: tt.state})); strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("after dropping dq-1: Events(State %q) = %v, want %v", tt.state, got, tt.want)
		}
	}

	if n, err := q.DropDead(ctxFor(t, waitLong), nil); err != nil || n != 2 {
		t.Fatalf("DropDead(nil) = %d, %v, want 2 (dq-2, dq-t), nil", n, err)
	}
	all := dropped
	all.droppedUndated = o.DropAllUnmarked
	wantRecords(t, dl, "dq-2", start, all)
	wantAll := "dq-1,dq-2,dq-t"
	if o.DropAllUnmarked {
		wantRecords(t, dl, "dq-t", start, wantRecord{sink: sinkA, state: pipeline.StateUnknown})
		wantAll = "dq-1,dq-2"
	} else {
		wantRecords(t, dl, "dq-t", start, wantRecord{sink: sinkA, route: "bad", state: pipeline.StateDropped, lastErr: "transform: boom", dropped: true})
	}
	if got := infoIDs(mustEvents(t, l, pipeline.EventFilter{Sink: sinkA, State: pipeline.StateDead})); len(got) != 0 {
		t.Errorf("after dropping every dead letter: Events(State dead) = %v, want none", got)
	}
	if got := infoIDs(mustEvents(t, l, pipeline.EventFilter{State: pipeline.StateDropped})); strings.Join(got, ",") != wantAll {
		t.Errorf("Events(State dropped) = %v, want [%s]", got, wantAll)
	}

	// A replay puts a dropped event back in the queue.
	if n, err := q.Requeue(ctxFor(t, waitLong), []pipeline.Requeue{{Seq: ds[0].Seq, Route: "replay"}}); err != nil || n != 1 {
		t.Fatalf("Requeue(dq-1) = %d, %v, want 1, nil", n, err)
	}
	if rs := mustDeliveries(t, dl, "dq-1"); len(rs) != 1 || rs[0].State != pipeline.StateQueued {
		t.Errorf("Deliveries(dq-1) after a replay = %s, want queued", fmtRecords(rs))
	}
}
