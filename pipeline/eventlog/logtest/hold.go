package logtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/stacks"
	"github.com/pipelined/pipelined/pipeline"
)

// Per-key order ([pipeline.Holder]): parking entries (Hold), releasing
// them, and what a restarting dispatcher reads (Waiting). Each test skips
// a log whose queues are not Holders.

func holder(t *testing.T, l pipeline.Log) pipeline.Holder {
	t.Helper()
	return queueAs[pipeline.Holder](t, l, sinkA, "pipeline.Holders (no per-key order)")
}

// testHoldUntilRelease: a held entry is not fetched until released, costs
// no attempt, keeps its LastError, and counts as retrying.
func testHoldUntilRelease(t *testing.T, l pipeline.Log) {
	q := holder(t, l)
	appendIDs(t, l, ids("hd", 3), sinkA)
	ds := mustFetch(t, q, 3)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "boom"})
	ds = mustFetch(t, q, 1) // hd-0 again, attempt 2, LastError "boom"; hd-1 and hd-2 still leased
	wantDeliveries(t, "Fetch after Retry", ds, ids("hd", 3)[:1], 2)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Hold})
	all := ds[0].Seq // hd-0000; hd-0001 and hd-0002 follow it
	ctx := ctxFor(t, waitLong)
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: all + 1, Outcome: pipeline.Hold}, {Seq: all + 2, Outcome: pipeline.Hold}}); err != nil {
		t.Fatalf("Settle(Hold) = %v, want nil", err)
	}
	wantStats(t, q, pipeline.QueueStats{Retrying: 3})
	fetchNone(t, q)
	wantHeld(t, l, map[string]bool{"hd-0000": true, "hd-0001": true, "hd-0002": true})
	if n, err := q.Release(ctx, []uint64{all + 1, all + 1, 1 << 60}); err != nil || n != 1 {
		t.Fatalf("Release(hd-1, hd-1 again, a seq not held) = %d, %v; want 1, nil", n, err)
	}
	wantHeld(t, l, map[string]bool{"hd-0000": true, "hd-0001": false, "hd-0002": true})
	wantDeliveries(t, "Fetch after Release", mustFetch(t, q, 1), []string{"hd-0001"}, 1)
	if n, err := q.Release(ctx, nil); err != nil || n != 2 {
		t.Fatalf("Release(nil) = %d, %v; want 2 (hd-0000 and hd-0002), nil", n, err)
	}
	got := mustFetch(t, q, 2)
	if got[0].Event.ID != "hd-0000" || got[0].Attempt != 2 || got[0].LastError != "boom" {
		t.Errorf("released hd-0000 = %s attempt %d last error %q, want attempt 2 (a hold costs none) and \"boom\"", got[0].Event.ID, got[0].Attempt, got[0].LastError)
	}
	if got[1].Event.ID != "hd-0002" || got[1].Attempt != 1 {
		t.Errorf("released hd-0002 = %s attempt %d, want attempt 1", got[1].Event.ID, got[1].Attempt)
	}
}

// wantHeld checks the Held of each event's record at sinkA, on a log that
// keeps delivery records.
func wantHeld(t *testing.T, l pipeline.Log, want map[string]bool) {
	t.Helper()
	dl, ok := unwrap(l).(pipeline.DeliveryLog)
	if !ok {
		return
	}
	for id, held := range want {
		if r := mustDeliveries(t, dl, id)[0]; r.Held != held {
			t.Errorf("Deliveries(%s)[0].Held = %v, want %v", id, r.Held, held)
		}
	}
}

// testSettleRelease: an entry held and released in the same call is
// fetched at once.
func testSettleRelease(t *testing.T, l pipeline.Log) {
	q := holder(t, l)
	appendIDs(t, l, ids("sr", 3), sinkA)
	ds := mustFetch(t, q, 3)
	s := []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Ack}, {Seq: ds[1].Seq, Outcome: pipeline.Hold}, {Seq: ds[2].Seq, Outcome: pipeline.Hold}}
	if err := q.SettleRelease(ctxFor(t, waitLong), s, []uint64{ds[1].Seq}); err != nil {
		t.Fatalf("SettleRelease = %v, want nil", err)
	}
	wantDeliveries(t, "Fetch after SettleRelease", mustFetch(t, q, 1), []string{"sr-0001"}, 1)
	fetchNone(t, q)
	// Where a leased entry counts (Ready or Retrying) differs by log.
	if st, err := q.Stats(ctxFor(t, waitLong)); err != nil || st.Ready+st.Retrying != 2 || st.Dead != 0 {
		t.Errorf("Stats = %+v, %v; want 2 entries (sr-0001 leased, sr-0002 held)", st, err)
	}
}

// testWaiting: Waiting reports retrying, held, dead (when asked) and the
// ready entries below the highest of those, not the ready ones above.
func testWaiting(t *testing.T, l pipeline.Log) {
	q := holder(t, l)
	appendIDs(t, l, ids("wt", 6), sinkA)
	ds := mustFetch(t, q, 5) // wt-0005 stays ready, never fetched
	mustSettle(t, q,
		pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "later"},
		// ds[1] stays leased: fetched and not settled when the process stopped.
		pipeline.Settlement{Seq: ds[2].Seq, Outcome: pipeline.Hold},
		pipeline.Settlement{Seq: ds[3].Seq, Outcome: pipeline.Dead, Err: "dead"},
		pipeline.Settlement{Seq: ds[4].Seq, Outcome: pipeline.Ack},
	)
	for _, tc := range []struct {
		dead bool
		want string
	}{
		{true, "wt-0000:retry wt-0001:ready wt-0002:held wt-0003:dead"},
		{false, "wt-0000:retry wt-0001:ready wt-0002:held"},
	} {
		t.Run(fmt.Sprintf("dead=%v", tc.dead), func(t *testing.T) {
			var got []pipeline.Waiting
			if err := q.Waiting(ctxFor(t, waitLong), tc.dead, func(w pipeline.Waiting) error { got = append(got, w); return nil }); err != nil {
				t.Fatalf("Waiting = %v, want nil", err)
			}
			slices.SortFunc(got, func(a, b pipeline.Waiting) int { return strings.Compare(a.Event.ID, b.Event.ID) })
			var s []string
			for _, w := range got {
				s = append(s, w.Event.ID+":"+map[pipeline.WaitingState]string{
					pipeline.WaitingReady: "ready", pipeline.WaitingRetry: "retry", pipeline.WaitingHeld: "held", pipeline.WaitingDead: "dead"}[w.State])
				if d := eventDiff(w.Event, event(w.Event.ID)); d != "" {
					t.Errorf("Waiting event %s: %s", w.Event.ID, d)
				}
			}
			if got := strings.Join(s, " "); got != tc.want {
				t.Errorf("Waiting(dead=%v) = %s, want %s", tc.dead, got, tc.want)
			}
		})
	}
}

// testHoldRecord: a held entry that was never attempted is queued in its
// delivery record and selected as pending, so "what has not reached the
// sink?" counts it; one held after a failed attempt stays retrying.
func testHoldRecord(t *testing.T, l pipeline.Log) {
	q := holder(t, l)
	dl := deliveryLog(t, l)
	appendIDs(t, l, ids("hr", 2), sinkA)
	ds := mustFetch(t, q, 2)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "boom"})
	ds0 := mustFetch(t, q, 1)
	mustSettle(t, q, pipeline.Settlement{Seq: ds0[0].Seq, Outcome: pipeline.Hold}, pipeline.Settlement{Seq: ds[1].Seq, Outcome: pipeline.Hold})
	ctx := ctxFor(t, waitLong)
	for id, want := range map[string]string{"hr-0000": pipeline.StateRetrying, "hr-0001": pipeline.StateQueued} {
		rs, err := dl.Deliveries(ctx, id)
		if err != nil || len(rs) != 1 || rs[0].State != want || rs[0].Route == "" {
			t.Errorf("Deliveries(%s) of a held entry = %+v, %v; want one record of sink %s, state %s, with its route", id, rs, err, sinkA, want)
		}
	}
	got, _, err := l.Events(ctx, pipeline.EventFilter{Sink: sinkA, State: pipeline.StatePending, Limit: 10})
	if err != nil || len(got) != 2 {
		t.Errorf("Events(state=pending) with two held entries = %d events, %v; want 2", len(got), err)
	}
}

// testHasten: a retry due in an hour, hastened, is fetched at once with its
// attempt count and LastError; another retry, a held entry, a leased one, a
// dead letter and a seq not in the queue are left as they are.
func testHasten(t *testing.T, l pipeline.Log) {
	q := queueAs[pipeline.Hastener](t, l, sinkA, "pipeline.Hasteners")
	appendIDs(t, l, ids("hs", 5), sinkA)
	ds := mustFetch(t, q, 4) // hs-0004 stays ready
	first := ds[0].Seq
	later := time.Now().Add(time.Hour)
	mustSettle(t, q,
		pipeline.Settlement{Seq: first, Outcome: pipeline.Retry, RetryAt: later, Err: "boom"},
		pipeline.Settlement{Seq: first + 1, Outcome: pipeline.Retry, RetryAt: later, Err: "held later"},
		pipeline.Settlement{Seq: first + 2, Outcome: pipeline.Dead, Err: "dead"})
	// hs-0003 stays leased; hs-0004, ready, is fetched and held.
	holder(t, l)
	ds = mustFetch(t, q, 1)
	wantDeliveries(t, "Fetch of the ready entry", ds, []string{"hs-0004"}, 1)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Hold})
	// A dispatcher waits in Fetch for the retry an hour away: Hasten must
	// wake it.
	type fetched struct {
		ds  []pipeline.Delivery
		err error
	}
	res := make(chan fetched, 1)
	go func() {
		ds, err := q.Fetch(ctxFor(t, waitLong), 1)
		res <- fetched{ds, err}
	}()
	typ := strings.TrimPrefix(fmt.Sprintf("%T", q), "*")
	pkg, name, _ := strings.Cut(typ, ".")
	stacks.WaitBlocked(t, pkg+".(*"+name+").Fetch", 1)
	ctx := ctxFor(t, waitLong)
	n, err := q.Hasten(ctx, []uint64{first, first, first + 2, first + 3, first + 4, 1 << 60})
	if err != nil || n != 1 {
		t.Fatalf("Hasten(a retry twice, a dead letter, a leased entry, a held one, a seq not in the queue) = %d, %v; want 1, nil", n, err)
	}
	got := <-res
	if got.err != nil {
		t.Fatalf("Fetch waiting when Hasten ran = %v, want hs-0000 (Hasten did not wake it)", got.err)
	}
	wantDeliveries(t, "Fetch after Hasten", got.ds, []string{"hs-0000"}, 2)
	if got.ds[0].LastError != "boom" {
		t.Errorf("hastened entry's LastError = %q, want %q", got.ds[0].LastError, "boom")
	}
	fetchNone(t, q) // hs-0001 is still due in an hour
	// The records say when each is due: hs-0000 now, hs-0001 still later.
	if dl, ok := unwrap(l).(pipeline.DeliveryLog); ok {
		if r := mustDeliveries(t, dl, "hs-0000")[0]; !r.NextAttemptAt.Before(later.Add(-time.Minute)) {
			t.Errorf("hs-0000's next_attempt_at = %v after Hasten, want about now", r.NextAttemptAt)
		}
		if r := mustDeliveries(t, dl, "hs-0001")[0]; !r.NextAttemptAt.Equal(later) {
			t.Errorf("hs-0001's next_attempt_at = %v, want %v (not hastened)", r.NextAttemptAt, later)
		}
	}
}

// testHastenNotAttemptedSeq: Hasten (the dispatcher's, when a probe
// closes the breaker) of an event the sink did not attempt, queued and due
// in an hour, says in its record that it is due now, as HastenRetries does.
func testHastenNotAttemptedSeq(t *testing.T, l pipeline.Log) {
	q := queueAs[pipeline.Hastener](t, l, sinkA, "pipeline.Hasteners")
	dl, ok := unwrap(l).(pipeline.DeliveryLog)
	if !ok {
		t.Skip("the log does not implement pipeline.DeliveryLog")
	}
	appendIDs(t, l, ids("hq", 1), sinkA)
	ds := mustFetch(t, q, 1)
	later := time.Now().Add(time.Hour)
	mustSettle(t, q, pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: later, Err: "throttled", NotAttempted: true})
	if r := mustDeliveries(t, dl, "hq-0000")[0]; !r.NextAttemptAt.Equal(later) {
		t.Fatalf("hq-0000's next_attempt_at = %v, want %v (the premise: due in an hour)", r.NextAttemptAt, later)
	}
	if n, err := q.Hasten(ctxFor(t, waitLong), []uint64{ds[0].Seq}); err != nil || n != 1 {
		t.Fatalf("Hasten(an entry not attempted) = %d, %v; want 1, nil", n, err)
	}
	if r := mustDeliveries(t, dl, "hq-0000")[0]; !r.NextAttemptAt.Before(later.Add(-time.Minute)) {
		t.Errorf("hq-0000's next_attempt_at = %v after Hasten, want about now", r.NextAttemptAt)
	}
	mustSettle(t, q, ack(mustFetch(t, q, 1)...)...)
}

// testDropDeadSeqs: a Holder's drop says which seqs it removed, in
// order: not a repeat, an unknown seq, one retried just before, or one
// dropped before; nil drops nothing.
func testDropDeadSeqs(t *testing.T, l pipeline.Log) {
	q := holder(t, l)
	all := deadTargets(t, l, "ds", 4)
	dl := mustDeadLetters(t, q, 0, 10)
	ctx := ctxFor(t, waitLong)
	if n, err := q.RetryDead(ctx, []uint64{dl[1].Seq}); err != nil || n != 1 {
		t.Fatalf("RetryDead(%s) = %d, %v, want 1, nil", all[1], n, err)
	}
	if n, err := q.DropDead(ctx, []uint64{dl[3].Seq}); err != nil || n != 1 {
		t.Fatalf("DropDead(%s) = %d, %v, want 1, nil", all[3], n, err)
	}
	got, err := q.DropDeadSeqs(ctx, []uint64{dl[3].Seq, dl[2].Seq, dl[1].Seq, dl[0].Seq, dl[2].Seq, dl[3].Seq + 1000})
	if want := []uint64{dl[0].Seq, dl[2].Seq}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("DropDeadSeqs(all four, a repeat, an unknown one) after a retry of %s and a drop of %s = %v, %v; want %v, nil",
			all[1], all[3], got, err, want)
	}
	wantStats(t, q, pipeline.QueueStats{Retrying: 1})
	if got, err := q.DropDeadSeqs(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("DropDeadSeqs(nil) = %v, %v; want nothing dropped", got, err)
	}
}
