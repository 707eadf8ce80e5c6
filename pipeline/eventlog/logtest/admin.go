package logtest

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// Subtests of Run for what the admin API uses: Events, RetryDead, DropDead,
// Requeue and Oldest.

// mustEvents pages through Events with f until next is "", Limit at a time,
// and returns every event listed.
func mustEvents(t *testing.T, l pipeline.Log, f pipeline.EventFilter) []pipeline.EventInfo {
	t.Helper()
	var all []pipeline.EventInfo
	for range 1000 {
		got, next, err := l.Events(ctxFor(t, waitLong), f)
		if err != nil {
			t.Fatalf("Events(%+v) error = %v, want nil", f, err)
		}
		if f.Limit > 0 && len(got) > f.Limit {
			t.Fatalf("Events(%+v) returned %d events, want at most %d", f, len(got), f.Limit)
		}
		all = append(all, got...)
		if next == "" {
			return all
		}
		f.After = next
	}
	t.Fatalf("Events(%+v): no end after 1000 pages", f)
	return nil
}

func infoIDs(es []pipeline.EventInfo) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func testEventsCursor(t *testing.T, l pipeline.Log) {
	all := ids("ev", 7)
	mustAppend(t, l, entry(all[0], sinkA, sinkB), entry(all[1]), entry(all[2], sinkB))
	appendIDs(t, l, all[3:], sinkA)

	got, next, err := l.Events(ctxFor(t, waitLong), pipeline.EventFilter{})
	if err != nil || next != "" {
		t.Fatalf("Events(all) next, error = %q, %v, want \"\", nil", next, err)
	}
	if !slices.Equal(infoIDs(got), all) {
		t.Fatalf("Events(all) = %v, want %v", infoIDs(got), all)
	}
	for i, e := range got {
		if i > 0 && e.Seq <= got[i-1].Seq {
			t.Errorf("Events(all)[%d] Seq %d follows %d, want increasing", i, e.Seq, got[i-1].Seq)
		}
		if d := eventDiff(e.Event, event(e.ID)); d != "" {
			t.Errorf("Events(all)[%d]: %s", i, d)
		}
	}
	wantSinks := [][]string{{sinkA, sinkB}, nil, {sinkB}, {sinkA}}
	for i, want := range wantSinks {
		if !slices.Equal(got[i].Sinks, want) {
			t.Errorf("Events(all)[%d].Sinks = %v, want %v", i, got[i].Sinks, want)
		}
	}
	// Seqs agree with the queues'.
	ds := mustFetch(t, l.Queue(sinkB), 2)
	if ds[0].Seq != got[0].Seq || ds[1].Seq != got[2].Seq {
		t.Errorf("Fetch(sink-b) Seqs = %d, %d, want the Events Seqs %d, %d", ds[0].Seq, ds[1].Seq, got[0].Seq, got[2].Seq)
	}

	for _, limit := range []int{1, 2, 3, 7, 8} {
		paged := mustEvents(t, l, pipeline.EventFilter{Limit: limit})
		if !slices.Equal(infoIDs(paged), all) {
			t.Errorf("Events paged by %d = %v, want %v", limit, infoIDs(paged), all)
		}
	}
	first, next, err := l.Events(ctxFor(t, waitLong), pipeline.EventFilter{Limit: 3})
	if err != nil || len(first) != 3 || next == "" {
		t.Fatalf("Events(Limit 3) = %d events, next %q, %v, want 3, a cursor, nil", len(first), next, err)
	}
	rest := mustEvents(t, l, pipeline.EventFilter{After: next})
	if !slices.Equal(infoIDs(rest), all[3:]) {
		t.Errorf("Events(After %q) = %v, want %v", next, infoIDs(rest), all[3:])
	}
	if got, _, _ := l.Events(ctxFor(t, waitLong), pipeline.EventFilter{Limit: 2}); len(got) != 2 {
		t.Errorf("Events(Limit 2) returned %d events, want 2", len(got))
	}
}

func testEventsFilter(t *testing.T, l pipeline.Log) {
	at := func(id string, d time.Duration, src string, sinks ...string) pipeline.Entry {
		e := entry(id, sinks...)
		e.Event.ReceivedAt = receivedAt.Add(d)
		e.Event.Source = src
		return e
	}
	mustAppend(t, l,
		at("f-0", 0, source, sinkA),
		at("f-1", time.Minute, source2, sinkB),
		at("f-2", 2*time.Minute, source, sinkA, sinkB),
		at("f-3", 3*time.Minute, source2),
	)
	tests := []struct {
		name string
		f    pipeline.EventFilter
		want []string
	}{
		{"source", pipeline.EventFilter{Source: source}, []string{"f-0", "f-2"}},
		{"other source", pipeline.EventFilter{Source: source2}, []string{"f-1", "f-3"}},
		{"unknown source", pipeline.EventFilter{Source: "nope"}, nil},
		{"sink", pipeline.EventFilter{Sink: sinkB}, []string{"f-1", "f-2"}},
		{"id", pipeline.EventFilter{ID: "f-2"}, []string{"f-2"}},
		{"unknown id", pipeline.EventFilter{ID: "nope"}, nil},
		{"since (inclusive)", pipeline.EventFilter{Since: receivedAt.Add(time.Minute)}, []string{"f-1", "f-2", "f-3"}},
		{"until (exclusive)", pipeline.EventFilter{Until: receivedAt.Add(2 * time.Minute)}, []string{"f-0", "f-1"}},
		{"range and source", pipeline.EventFilter{Since: receivedAt.Add(time.Second), Until: receivedAt.Add(time.Hour), Source: source}, []string{"f-2"}},
		{"everything paged", pipeline.EventFilter{Limit: 1}, []string{"f-0", "f-1", "f-2", "f-3"}},
		{"filtered and paged", pipeline.EventFilter{Source: source2, Limit: 1}, []string{"f-1", "f-3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := infoIDs(mustEvents(t, l, tt.f)); !slices.Equal(got, tt.want) && len(got)+len(tt.want) > 0 {
				t.Errorf("Events(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
}

func testEventsDedupKey(t *testing.T, l pipeline.Log) {
	mustAppend(t, l, dedupEntry("dk-1", "call-1", hour, sinkA), entry("dk-2", sinkA), dedupEntry("dk-3", "call-3", hour))
	got, err := l.Event(ctxFor(t, waitLong), "dk-1")
	if err != nil || got.DedupKey != "call-1" {
		t.Errorf("Event(dk-1).DedupKey = %q, %v, want %q (Entry.DedupKey is stored)", got.DedupKey, err, "call-1")
	}
	if got, _ := l.Event(ctxFor(t, waitLong), "dk-2"); got.DedupKey != "" {
		t.Errorf("Event(dk-2).DedupKey = %q, want \"\"", got.DedupKey)
	}
	for key, want := range map[string][]string{"call-1": {"dk-1"}, "call-3": {"dk-3"}} {
		es := mustEvents(t, l, pipeline.EventFilter{DedupKey: key})
		if !slices.Equal(infoIDs(es), want) {
			t.Errorf("Events(DedupKey %q) = %v, want %v", key, infoIDs(es), want)
		}
		if len(es) == 1 && es[0].DedupKey != key {
			t.Errorf("Events(DedupKey %q)[0].DedupKey = %q", key, es[0].DedupKey)
		}
	}
	ds := mustFetch(t, l.Queue(sinkA), 1)
	if ds[0].Event.DedupKey != "call-1" {
		t.Errorf("Fetch: Delivery.Event.DedupKey = %q, want %q", ds[0].Event.DedupKey, "call-1")
	}
}

func testEventsBadCursor(t *testing.T, l pipeline.Log) {
	mustAppend(t, l, entry("bc-1"))
	for _, after := range []string{"x", "-1", "1.5"} {
		_, _, err := l.Events(ctxFor(t, waitLong), pipeline.EventFilter{After: after})
		if !errors.Is(err, pipeline.ErrBadCursor) {
			t.Errorf("Events(After %q) error = %v, want error wrapping pipeline.ErrBadCursor", after, err)
		}
	}
}

// deadTargets appends n events routed straight to sinkA's dead-letter queue
// and returns their ids.
func deadTargets(t *testing.T, l pipeline.Log, prefix string, n int) []string {
	t.Helper()
	all := ids(prefix, n)
	es := make([]pipeline.Entry, n)
	for i, id := range all {
		es[i] = pipeline.Entry{Event: event(id), Targets: []pipeline.Target{{Sink: sinkA, Route: "r", Payload: []byte(`{"p":"` + id + `"}`), Err: "boom " + id}}}
	}
	mustAppend(t, l, es...)
	return all
}

func testRetryDeadAll(t *testing.T, l pipeline.Log) {
	all := deadTargets(t, l, "ra", 3)
	q := l.Queue(sinkA)
	// One that died after attempts, to see the count reset.
	mustAppend(t, l, entry("ra-x", sinkA))
	d := mustFetch(t, q, 1)
	mustSettle(t, q, pipeline.Settlement{Seq: d[0].Seq, Outcome: pipeline.Dead, Err: "gave up"})
	all = append(all, "ra-x")
	wantStats(t, q, pipeline.QueueStats{Dead: 4})

	n, err := q.RetryDead(ctxFor(t, waitLong), nil)
	if err != nil || n != 4 {
		t.Fatalf("RetryDead(nil) = %d, %v, want 4, nil", n, err)
	}
	wantStats(t, q, pipeline.QueueStats{Retrying: 4})
	ds := mustFetch(t, q, 4)
	wantDeliveries(t, "Fetch after RetryDead", ds, all, 1)
	for i, d := range ds {
		wantErr := "boom " + d.Event.ID
		wantPayload := `{"p":"` + d.Event.ID + `"}`
		if i == 3 {
			wantErr, wantPayload = "gave up", ""
		}
		if d.LastError != wantErr || string(d.Payload) != wantPayload {
			t.Errorf("Fetch after RetryDead [%d] LastError, Payload = %q, %q, want %q, %q", i, d.LastError, d.Payload, wantErr, wantPayload)
		}
	}
	mustSettle(t, q, ack(ds...)...)
	wantStats(t, q, pipeline.QueueStats{})
	if n, err := q.RetryDead(ctxFor(t, waitLong), nil); err != nil || n != 0 {
		t.Errorf("RetryDead(nil) on an empty DLQ = %d, %v, want 0, nil", n, err)
	}
}

func testRetryDeadSome(t *testing.T, l pipeline.Log) {
	all := deadTargets(t, l, "rs", 4)
	q := l.Queue(sinkA)
	dl := mustDeadLetters(t, q, 0, 10)
	if len(dl) != 4 {
		t.Fatalf("DeadLetters = %d entries, want 4", len(dl))
	}
	n, err := q.RetryDead(ctxFor(t, waitLong), []uint64{dl[1].Seq, dl[3].Seq, dl[3].Seq + 1000})
	if err != nil || n != 2 {
		t.Fatalf("RetryDead(2 dead seqs and an unknown one) = %d, %v, want 2, nil", n, err)
	}
	wantStats(t, q, pipeline.QueueStats{Retrying: 2, Dead: 2})
	wantDeliveries(t, "Fetch after RetryDead", mustFetch(t, q, 2), []string{all[1], all[3]}, 1)
	if got := mustDeadLetters(t, q, 0, 10); len(got) != 2 || got[0].Event.ID != all[0] || got[1].Event.ID != all[2] {
		t.Errorf("DeadLetters after RetryDead = %d entries, want %s and %s", len(got), all[0], all[2])
	}
	// Another sink's DLQ is another queue.
	if n, err := l.Queue(sinkB).RetryDead(ctxFor(t, waitLong), nil); err != nil || n != 0 {
		t.Errorf("sink-b RetryDead(nil) = %d, %v, want 0, nil", n, err)
	}
}

func testDropDead(t *testing.T, l pipeline.Log) {
	all := deadTargets(t, l, "dr", 4)
	q := l.Queue(sinkA)
	dl := mustDeadLetters(t, q, 0, 10)
	n, err := q.DropDead(ctxFor(t, waitLong), []uint64{dl[0].Seq, dl[0].Seq, dl[2].Seq, 99999})
	if err != nil || n != 2 {
		t.Fatalf("DropDead(2 dead seqs, a repeat, an unknown one) = %d, %v, want 2, nil", n, err)
	}
	wantStats(t, q, pipeline.QueueStats{Dead: 2})
	if got := mustDeadLetters(t, q, 0, 10); len(got) != 2 || got[0].Event.ID != all[1] || got[1].Event.ID != all[3] {
		t.Errorf("DeadLetters after DropDead = %d entries, want %s and %s", len(got), all[1], all[3])
	}
	mustEvent(t, l, event(all[0])) // the event stays in the log
	n, err = q.DropDead(ctxFor(t, waitLong), nil)
	if err != nil || n != 2 {
		t.Fatalf("DropDead(nil) = %d, %v, want 2, nil", n, err)
	}
	wantStats(t, q, pipeline.QueueStats{})
	fetchNone(t, q)
}

func testRequeueAfterAck(t *testing.T, l pipeline.Log) {
	appendIDs(t, l, []string{"rq-1", "rq-2"}, sinkA)
	q := l.Queue(sinkA)
	ds := mustFetch(t, q, 2)
	mustSettle(t, q, ack(ds...)...)
	n, err := q.Requeue(ctxFor(t, waitLong), []pipeline.Requeue{{Seq: ds[1].Seq, Route: "replay", Payload: []byte(`{"again":true}`)}})
	if err != nil || n != 1 {
		t.Fatalf("Requeue(rq-2) = %d, %v, want 1, nil", n, err)
	}
	wantStats(t, q, pipeline.QueueStats{Retrying: 1})
	got := mustFetch(t, q, 1)
	wantDeliveries(t, "Fetch after Requeue", got, []string{"rq-2"}, 1)
	if got[0].Seq != ds[1].Seq || got[0].Route != "replay" || string(got[0].Payload) != `{"again":true}` {
		t.Errorf("Fetch after Requeue = Seq %d, Route %q, Payload %q, want %d, %q, %q", got[0].Seq, got[0].Route, got[0].Payload, ds[1].Seq, "replay", `{"again":true}`)
	}
	mustSettle(t, q, ack(got...)...)
	wantStats(t, q, pipeline.QueueStats{})
	fetchNone(t, q)

	// A sink the event was never routed to can be given it too.
	qb := l.Queue(sinkB)
	if n, err := qb.Requeue(ctxFor(t, waitLong), []pipeline.Requeue{{Seq: ds[0].Seq}}); err != nil || n != 1 {
		t.Fatalf("sink-b Requeue(rq-1) = %d, %v, want 1, nil", n, err)
	}
	wantDeliveries(t, "sink-b Fetch after Requeue", mustFetch(t, qb, 1), []string{"rq-1"}, 1)
}

// testRequeueBelowCursor: an event older than everything the queue has
// handed out since it started is still delivered when requeued, and is
// delivered before the new entries unless o.RequeueMayFollow.
func testRequeueBelowCursor(t *testing.T, l pipeline.Log, o Options) {
	all := ids("bcq", 6)
	appendIDs(t, l, all[:4], sinkA)
	q := l.Queue(sinkA)
	ds := mustFetch(t, q, 4)
	mustSettle(t, q, ack(ds...)...)
	appendIDs(t, l, all[4:], sinkA)
	n, err := q.Requeue(ctxFor(t, waitLong), []pipeline.Requeue{{Seq: ds[0].Seq}, {Seq: ds[2].Seq}})
	if err != nil || n != 2 {
		t.Fatalf("Requeue(2 acked) = %d, %v, want 2, nil", n, err)
	}
	got := mustFetch(t, q, 4)
	if o.RequeueMayFollow {
		slices.SortFunc(got, func(a, b pipeline.Delivery) int { return cmp.Compare(a.Seq, b.Seq) })
	}
	wantDeliveries(t, "Fetch after Requeue", got[:2], []string{all[0], all[2]}, 1)
	wantDeliveries(t, "Fetch after Requeue", got[2:], all[4:], 1)
	mustSettle(t, q, ack(got...)...)
	fetchNone(t, q)
}

// testRequeueNoDuplicates: Requeue skips the events that have an entry
// (leased, retrying, dead, ready) and queues each of the others once,
// given their seqs, or their seqs and ids as a replay gives them
// (pipeline.Requeue.ID).
func testRequeueNoDuplicates(t *testing.T, l pipeline.Log, withIDs bool) {
	all := ids("nd", 4)
	appendIDs(t, l, all, sinkA)
	q := l.Queue(sinkA)
	ds := mustFetch(t, q, 3) // nd-0..2 leased, nd-3 ready
	mustSettle(t, q,
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "later"},
		pipeline.Settlement{Seq: ds[2].Seq, Outcome: pipeline.Dead, Err: "dead"},
	)
	events := mustEvents(t, l, pipeline.EventFilter{})
	rs := make([]pipeline.Requeue, 0, 2*len(events))
	for _, e := range events {
		// (Dead set: Requeue answers it for every entry.)
		r := pipeline.Requeue{Seq: e.Seq, Dead: true}
		if withIDs {
			r.ID = e.ID
		}
		rs = append(rs, r, r)
	}
	// leased, retrying, dead, ready: each has its entry already.
	if n, err := q.Requeue(ctxFor(t, waitLong), rs); err != nil || n != 0 {
		t.Fatalf("Requeue(entries that are queued) = %d, %v, want 0, nil", n, err)
	}
	for i, r := range rs {
		if want := r.Seq == ds[2].Seq; r.Dead != want {
			t.Errorf("after Requeue, rs[%d] (seq %d) Dead = %v, want %v (only %s is a dead letter)", i, r.Seq, r.Dead, want, all[2])
		}
	}
	wantStats(t, q, pipeline.QueueStats{Ready: 2, Retrying: 1, Dead: 1})
	mustSettle(t, q, ack(ds[0])...)
	// Now nd-0 has no entry: requeued once however often it is named.
	if n, err := q.Requeue(ctxFor(t, waitLong), rs); err != nil || n != 1 {
		t.Fatalf("Requeue(everything, twice, after nd-0 was acked) = %d, %v, want 1, nil", n, err)
	}
	if n, err := q.Requeue(ctxFor(t, waitLong), rs); err != nil || n != 0 {
		t.Fatalf("Requeue(everything again) = %d, %v, want 0, nil", n, err)
	}
	got := mustFetch(t, q, 2)
	wantDeliveries(t, "Fetch", got, []string{all[0], all[3]}, 1)
	mustSettle(t, q, ack(got...)...)
	fetchNone(t, q)
}

// testRequeueMissing: a seq not in the log fails the whole call, given
// with an id (one no event has) or without.
func testRequeueMissing(t *testing.T, l pipeline.Log, withID bool) {
	appendIDs(t, l, []string{"mi-1"}, sinkA)
	q := l.Queue(sinkB)
	es := mustEvents(t, l, pipeline.EventFilter{})
	missing := es[0].Seq + 100
	rs := []pipeline.Requeue{{Seq: es[0].Seq}, {Seq: missing}}
	if withID {
		rs = []pipeline.Requeue{{Seq: es[0].Seq, ID: es[0].ID}, {Seq: missing, ID: "mi-gone"}}
	}
	n, err := q.Requeue(ctxFor(t, waitLong), rs)
	if !errors.Is(err, pipeline.ErrNotFound) || n != 0 {
		t.Fatalf("Requeue(a seq not in the log) = %d, %v, want 0, error wrapping pipeline.ErrNotFound", n, err)
	}
	if !strings.Contains(err.Error(), strconv.FormatUint(missing, 10)) {
		t.Errorf("Requeue(a seq not in the log) error %q does not name seq %d", err, missing)
	}
	wantStats(t, q, pipeline.QueueStats{}) // nothing of the call was queued
}

func testOldest(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	wantOldest := func(what string, want time.Time) {
		t.Helper()
		got, err := q.Oldest(ctxFor(t, waitLong))
		if err != nil || !got.Equal(want) {
			t.Fatalf("Oldest %s = %v, %v, want %v", what, got, err, want)
		}
	}
	wantOldest("of an empty queue", time.Time{})
	es := make([]pipeline.Entry, 3)
	for i := range es {
		es[i] = entry("old-"+strconv.Itoa(i), sinkA)
		es[i].Event.ReceivedAt = receivedAt.Add(time.Duration(i) * time.Minute)
	}
	mustAppend(t, l, es...)
	wantOldest("with 3 ready", receivedAt)
	ds := mustFetch(t, q, 1)
	wantOldest("with the first leased", receivedAt)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour)})
	wantOldest("with the first retrying", receivedAt)
	ds = mustFetch(t, q, 2)
	mustSettle(t, q, ack(ds...)...)
	wantOldest("with the first retrying, the rest acked", receivedAt)
	// Dead letters are not waiting for delivery.
	deadTargets(t, l, "old-dead", 1)
	wantOldest("with a dead letter too", receivedAt)
}

// testEventsNewestFirst pages through the log newest first, with and
// without a filter, and checks that the pages join up without a gap or a
// repeat; a log that lists oldest first only ([pipeline.NewestFirstLog]
// not implemented) skips it.
func testEventsNewestFirst(t *testing.T, l pipeline.Log) {
	nf, ok := unwrap(l).(pipeline.NewestFirstLog)
	if !ok {
		t.Skip("the log lists events oldest first only")
	}
	var es []pipeline.Entry
	for i := range 25 {
		src := "a"
		if i%5 == 0 {
			src = "b"
		}
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("ev-%02d", i), Source: src, ReceivedAt: time.Now(), Body: []byte(`{}`)}})
	}
	mustAppend(t, l, es...)
	for _, tc := range []struct {
		name   string
		source string
		want   []int
	}{
		{"all", "", []int{24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"source b", "b", []int{20, 15, 10, 5, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			f := pipeline.EventFilter{Source: tc.source, Limit: 4}
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatal("more than 20 pages: the cursor does not move")
				}
				page, next, err := nf.EventsNewestFirst(ctxFor(t, waitLong), f)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range page {
					got = append(got, e.ID)
				}
				if next == "" {
					break
				}
				f.After = next
			}
			var want []string
			for _, i := range tc.want {
				want = append(want, fmt.Sprintf("ev-%02d", i))
			}
			if !slices.Equal(got, want) {
				t.Errorf("EventsNewestFirst(source %q) = %v, want %v", tc.source, got, want)
			}
		})
	}
	// An id lookup honours the cursor as Events does: ev-03 (the 4th
	// event) is found from the top and below a cursor above it, not below
	// one under it.
	for _, tc := range []struct {
		after string
		want  int
	}{{"", 1}, {strconv.Itoa(len(es)), 1}, {"2", 0}} {
		page, _, err := nf.EventsNewestFirst(ctxFor(t, waitLong), pipeline.EventFilter{ID: "ev-03", After: tc.after})
		if err != nil || len(page) != tc.want {
			t.Errorf("EventsNewestFirst(id ev-03, after %q) = %d events, %v; want %d", tc.after, len(page), err, tc.want)
		}
	}
}
