package logtest

import (
	"maps"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// abandoner returns sink's queue of l as a [pipeline.Abandoner], skipping
// the test when it is not one.
func abandoner(t *testing.T, l pipeline.Log, sink string) pipeline.Abandoner {
	t.Helper()
	return queueAs[pipeline.Abandoner](t, l, sink, "pipeline.Abandoners")
}

// givenUp is the errFor of the Abandon calls of the suite.
func givenUp(lastErr string) string {
	if lastErr == "" {
		return "abandoned"
	}
	return "abandoned after " + lastErr
}

// mustAbandon calls Abandon(max) and wants n moved.
func mustAbandon(t *testing.T, q pipeline.Abandoner, max, n int) {
	t.Helper()
	got, err := q.Abandon(ctxFor(t, waitLong), max, givenUp)
	if err != nil || got != n {
		t.Fatalf("Abandon(%d) = %d, %v; want %d, nil", max, got, err, n)
	}
}

// testAbandon: Abandon moves every waiting entry (a retry due in an hour,
// one due now, a held one, ready ones) to the dead-letter queue, a page
// at a time, with errFor's error and no attempt counted; it leaves a
// leased entry, the dead letters already there and other sinks' queues
// as they are, and never removes anything.
func testAbandon(t *testing.T, l pipeline.Log) {
	q := abandoner(t, l, sinkA)
	_, holds := q.(pipeline.Holder)
	appendIDs(t, l, ids("ab", 7), sinkA)
	appendIDs(t, l, []string{"ab-other"}, sinkB)
	ds := mustFetch(t, q, 5) // ab-0005 and ab-0006 stay ready
	held := pipeline.Settlement{Seq: ds[2].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(hour), Err: "held"}
	if holds {
		held = pipeline.Settlement{Seq: ds[2].Seq, Outcome: pipeline.Hold}
	}
	mustSettle(t, q,
		pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(hour), Err: "503"},
		pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "timeout"},
		held,
		pipeline.Settlement{Seq: ds[3].Seq, Outcome: pipeline.Dead, Err: "400"})
	// ab-0004 stays leased.
	mustAbandon(t, q, 0, 0)
	wantStats(t, q, pipeline.QueueStats{Ready: 3, Retrying: 3, Dead: 1})
	mustAbandon(t, q, 2, 2)
	mustAbandon(t, q, 100, 3)
	mustAbandon(t, q, 100, 0)
	wantStats(t, q, pipeline.QueueStats{Ready: 1, Retrying: 0, Dead: 6})
	wantStats(t, l.Queue(sinkB), pipeline.QueueStats{Ready: 1})

	want := map[string]struct {
		err      string
		attempts int
	}{
		"ab-0000": {"abandoned after 503", 1},
		"ab-0001": {"abandoned after timeout", 1},
		"ab-0002": {"abandoned", 0},
		"ab-0003": {"400", 1},
		"ab-0005": {"abandoned", 0},
		"ab-0006": {"abandoned", 0},
	}
	if !holds {
		want["ab-0002"] = struct {
			err      string
			attempts int
		}{"abandoned after held", 1}
	}
	got := map[string]struct {
		err      string
		attempts int
	}{}
	for _, d := range mustDeadLetters(t, q, 0, 100) {
		got[d.Event.ID] = struct {
			err      string
			attempts int
		}{d.Err, d.Attempts}
		if id := d.Event.ID; id != "ab-0003" && (d.Route != "route-"+sinkA || d.FailedAt.IsZero() || string(d.Event.Body) != string(event(id).Body)) {
			t.Errorf("dead letter %s = route %q, failed at %v, body %q; want its route, a time, its event", id, d.Route, d.FailedAt, d.Event.Body)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("dead letters after Abandon (error, attempts) = %v, want %v", got, want)
	}
	if dl, ok := unwrap(l).(pipeline.DeliveryLog); ok {
		for id, w := range want {
			rs := mustDeliveries(t, dl, id)
			if len(rs) != 1 || rs[0].State != pipeline.StateDead || rs[0].LastError != w.err || rs[0].Attempts != w.attempts {
				t.Errorf("Deliveries(%s) after Abandon = %s, want dead with %q and %d attempts", id, fmtRecords(rs), w.err, w.attempts)
			}
		}
	}
	// Nothing is ready; the leased entry settles as usual.
	fetchNone(t, q)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[4].Seq, Outcome: pipeline.Ack})
	wantStats(t, q, pipeline.QueueStats{Dead: 6})
	// Appended later, waiting again: Abandon takes it.
	appendIDs(t, l, []string{"ab-late"}, sinkA)
	mustAbandon(t, q, 100, 1)
	wantStats(t, q, pipeline.QueueStats{Dead: 7})
}

// testReopenAbandoned: entries Abandon moved to the dead-letter queue
// stay there after a restart; none is queued again.
func testReopenAbandoned(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	dir := t.TempDir()
	l := reopen(t, open, dir)
	q := abandoner(t, l, sinkA)
	appendIDs(t, l, ids("ra", 3), sinkA)
	ds := mustFetch(t, q, 1)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(hour), Err: "503"})
	mustAbandon(t, q, 100, 3)
	mustClose(t, l)

	l = reopen(t, open, dir)
	q = abandoner(t, l, sinkA)
	wantStats(t, q, pipeline.QueueStats{Dead: 3})
	fetchNone(t, q)
	if n, err := q.DropDead(ctxFor(t, waitLong), nil); err != nil || n != 3 {
		t.Fatalf("DropDead(all) after reopening = %d, %v; want 3, nil", n, err)
	}
	mustClose(t, l)
	l = reopen(t, open, dir)
	wantStats(t, l.Queue(sinkA), pipeline.QueueStats{})
	if ql, ok := unwrap(l).(pipeline.QueueLister); ok {
		if names, err := ql.QueueNames(ctxFor(t, waitLong)); err != nil || len(names) != 0 {
			t.Errorf("QueueNames after the dead letters were dropped = %q, %v; want none", names, err)
		}
	}
}
