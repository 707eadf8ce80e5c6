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

// retryHastener returns the queue of sinkA as a pipeline.RetryHastener,
// or skips t.
func retryHastener(t *testing.T, l pipeline.Log) pipeline.RetryHastener {
	t.Helper()
	return queueAs[pipeline.RetryHastener](t, l, sinkA, "pipeline.RetryHasteners")
}

// mustHastenRetries calls HastenRetries(w, max) and wants n; with a nil w,
// on a walk of its own (a new retry-now), which it wants done after.
func mustHastenRetries(t *testing.T, q pipeline.RetryHastener, w *pipeline.RetryWalk, max, n int, what string) {
	t.Helper()
	own := w == nil
	if own {
		w = new(pipeline.RetryWalk)
	}
	got, err := q.HastenRetries(ctxFor(t, waitLong), w, max)
	if err != nil || got != n {
		t.Fatalf("HastenRetries(%d) %s = %d, %v; want %d, nil", max, what, got, err, n)
	}
	if own && max > 0 && !w.Done {
		t.Fatalf("HastenRetries(%d) %s: the walk is not done, with %d entries waiting at most", max, what, n)
	}
}

// testHastenRetries: every retry due later is made due now, page by page
// (max at a time, 0 once none is left), with its attempt count and
// LastError; a retry already due, a dead letter, a leased entry, a held
// one, a ready one and another sink's retry are left as they are. A
// Fetch waiting for the next retry is woken.
func testHastenRetries(t *testing.T, l pipeline.Log) {
	q := retryHastener(t, l)
	_, holds := q.(pipeline.Holder)
	appendIDs(t, l, ids("hr", 8), sinkA)
	appendIDs(t, l, []string{"hr-b"}, sinkB)
	ds := mustFetch(t, q, 7) // hr-0007 stays ready
	first := ds[0].Seq       // seqs are not consecutive in every log: ds[i].Seq
	later := time.Now().Add(hour)
	s := []pipeline.Settlement{
		{Seq: first, Outcome: pipeline.Retry, RetryAt: later, Err: "boom"},
		{Seq: ds[1].Seq, Outcome: pipeline.Retry, RetryAt: later.Add(time.Minute), Err: "boom"},
		{Seq: ds[2].Seq, Outcome: pipeline.Retry, RetryAt: later.Add(24 * hour), Err: "boom"},
		{Seq: ds[3].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(-time.Minute), Err: "due"},
		{Seq: ds[4].Seq, Outcome: pipeline.Dead, Err: "dead"},
	}
	if holds { // hr-0005 held; else it stays leased, as hr-0006 does
		s = append(s, pipeline.Settlement{Seq: ds[5].Seq, Outcome: pipeline.Hold})
	}
	mustSettle(t, q, s...)
	qb := l.Queue(sinkB)
	db := mustFetch(t, qb, 1)
	mustSettle(t, qb, pipeline.Settlement{Seq: db[0].Seq, Outcome: pipeline.Retry, RetryAt: later, Err: "b"})

	var w pipeline.RetryWalk
	mustHastenRetries(t, q, &w, 0, 0, "with a max of 0")
	mustHastenRetries(t, q, &w, 2, 2, "of three retries due later")
	if w.Done || w.Began.IsZero() {
		t.Fatalf("walk after a page of two of three = %+v, want it begun and not done", w)
	}
	mustHastenRetries(t, q, &w, 2, 1, "of the one left")
	if !w.Done {
		t.Fatalf("walk after the last one = %+v, want it done", w)
	}
	mustHastenRetries(t, q, &w, 2, 0, "of a walk done")
	mustHastenRetries(t, q, nil, 2, 0, "with none left")

	// Due now: the three hastened and hr-0003, which was due already, then
	// the ready hr-0007. The order of the retries among themselves is the
	// queue's own (due time, or seq).
	ds = mustFetch(t, q, 5)
	got := deliveryIDs(ds)
	slices.Sort(got)
	if want := []string{"hr-0000", "hr-0001", "hr-0002", "hr-0003", "hr-0007"}; !slices.Equal(got, want) {
		t.Fatalf("Fetch after HastenRetries = %v, want %v", got, want)
	}
	for _, d := range ds {
		switch {
		case d.Event.ID == "hr-0007":
			if d.Attempt != 1 {
				t.Errorf("ready hr-0007: Attempt = %d, want 1", d.Attempt)
			}
		case d.Attempt != 2:
			t.Errorf("%s: Attempt = %d after HastenRetries, want 2 (its count kept)", d.Event.ID, d.Attempt)
		case d.Event.ID != "hr-0003" && d.LastError != "boom":
			t.Errorf("%s: LastError = %q after HastenRetries, want %q", d.Event.ID, d.LastError, "boom")
		}
	}
	fetchNone(t, q)  // hr-0005 held (or leased), hr-0006 leased, hr-0004 dead
	fetchNone(t, qb) // another sink's retry waits for its time
	if st, err := q.Stats(ctxFor(t, waitLong)); err != nil || st.Dead != 1 {
		t.Errorf("Stats after HastenRetries = %+v, %v; want the dead letter still there", st, err)
	}
	if dl, ok := unwrap(l).(pipeline.DeliveryLog); ok {
		ds := mustDeliveries(t, dl, "hr-0002")
		if len(ds) != 1 || !ds[0].NextAttemptAt.Before(later) {
			t.Errorf("hr-0002's records after HastenRetries = %+v, want next_attempt_at about now", ds)
		}
	}

	// A dispatcher waits in Fetch for the retry an hour away: HastenRetries
	// must wake it.
	mustSettle(t, q, pipeline.Settlement{Seq: first, Outcome: pipeline.Retry, RetryAt: later, Err: "again"})
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
	mustHastenRetries(t, q, nil, 10, 1, "of a retry an hour away, with a Fetch waiting")
	r := <-res
	if r.err != nil {
		t.Fatalf("Fetch waiting when HastenRetries ran = %v, want hr-0000 (HastenRetries did not wake it)", r.err)
	}
	wantDeliveries(t, "Fetch after HastenRetries", r.ds, []string{"hr-0000"}, 3)
	if r.ds[0].LastError != "again" {
		t.Errorf("hastened hr-0000's LastError = %q, want %q", r.ds[0].LastError, "again")
	}
}

// testReopenHastenRetries: retries scheduled before a restart, which the
// process no longer knows of, are found after it ([pipeline.RetryClock]
// says when the next is due) and made due.
func testReopenHastenRetries(t *testing.T, open func(t *testing.T, dir string) pipeline.Log) {
	dir := t.TempDir()
	l := reopen(t, open, dir)
	queueAs[pipeline.RetryHastener](t, l, sinkA, "pipeline.RetryHasteners")
	appendIDs(t, l, ids("rh", 3), sinkA)
	ds := mustFetch(t, l.Queue(sinkA), 3)
	later := time.Now().Add(24 * hour)
	var s []pipeline.Settlement
	for _, d := range ds {
		s = append(s, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: later, Err: "503 Retry-After: 86400"})
	}
	mustSettle(t, l.Queue(sinkA), s...)
	mustClose(t, l)
	l = reopen(t, open, dir)
	q := retryHastener(t, l)
	fetchNone(t, q)
	if rc, ok := q.(pipeline.RetryClock); ok { // what /v1/sinks says until then
		mustNextRetry(t, rc, time.Now(), later, "after a restart")
	}
	mustHastenRetries(t, q, nil, 100, 3, "after a restart")
	mustHastenRetries(t, q, nil, 100, 0, "again")
	ds = mustFetch(t, q, 3)
	got := deliveryIDs(ds)
	slices.Sort(got)
	if !slices.Equal(got, ids("rh", 3)) {
		t.Fatalf("Fetch after HastenRetries = %v, want %v", got, ids("rh", 3))
	}
	for _, d := range ds {
		if d.Attempt != 2 || d.LastError != "503 Retry-After: 86400" {
			t.Errorf("%s after the restart and HastenRetries: Attempt %d, LastError %q; want 2, the error of its failure", d.Event.ID, d.Attempt, d.LastError)
		}
	}
}

// testHastenNotAttempted: an entry the sink did not attempt (settled Retry
// with NotAttempted, as the http sink's answer to a 429 with Retry-After)
// waits for a retry like any other, and HastenRetries makes it due now:
// one never attempted before (no failure, so no retry state of its own)
// and one that failed once and then was not attempted. Each comes back
// with the attempt count and LastError it had, and its delivery record's
// NextAttemptAt says it is due now, not when the sink asked.
func testHastenNotAttempted(t *testing.T, l pipeline.Log) {
	q := retryHastener(t, l)
	appendIDs(t, l, ids("hn", 2), sinkA)
	ds := mustFetch(t, q, 2)
	byID := map[string]pipeline.Delivery{}
	for _, d := range ds {
		byID[d.Event.ID] = d
	}
	mustSettle(t, q, pipeline.Settlement{Seq: byID["hn-0001"].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "503"})
	re := mustFetch(t, q, 1)
	if re[0].Event.ID != "hn-0001" || re[0].Attempt != 2 {
		t.Fatalf("Fetch of a due retry = %s attempt %d, want hn-0001 attempt 2", re[0].Event.ID, re[0].Attempt)
	}
	later := time.Now().Add(hour)
	mustSettle(t, q,
		pipeline.Settlement{Seq: byID["hn-0000"].Seq, Outcome: pipeline.Retry, RetryAt: later, Err: "throttled", NotAttempted: true},
		pipeline.Settlement{Seq: re[0].Seq, Outcome: pipeline.Retry, RetryAt: later, Err: "throttled", NotAttempted: true})
	fetchNone(t, q) // the premise: both wait for their hour
	mustHastenRetries(t, q, nil, 10, 2, "of two entries not attempted, an hour away")
	mustHastenRetries(t, q, nil, 10, 0, "again")
	again := mustFetch(t, q, 2)
	got := map[string]pipeline.Delivery{}
	for _, d := range again {
		got[d.Event.ID] = d
	}
	if d, ok := got["hn-0000"]; !ok || d.Attempt != 1 || d.LastError != "" {
		t.Errorf("hastened hn-0000 = %+v (found %v); want attempt 1, no error", d, ok)
	}
	if d, ok := got["hn-0001"]; !ok || d.Attempt != 2 || d.LastError != "503" {
		t.Errorf("hastened hn-0001 = %+v (found %v); want attempt 2, error 503", d, ok)
	}
	if dl, ok := unwrap(l).(pipeline.DeliveryLog); ok {
		for _, id := range ids("hn", 2) {
			rs := mustDeliveries(t, dl, id)
			if len(rs) != 1 || !rs[0].NextAttemptAt.Before(later.Add(-time.Minute)) {
				t.Errorf("%s's records after HastenRetries = %+v, want next_attempt_at about now, not %v", id, rs, later)
			}
		}
	}
	mustSettle(t, q, ack(again...)...)
}

// mustNextRetry calls NextRetry(now) and wants want (the zero time: none),
// to within retryEarly (a log may keep times in milliseconds).
func mustNextRetry(t *testing.T, q pipeline.RetryClock, now, want time.Time, what string) {
	t.Helper()
	got, err := q.NextRetry(ctxFor(t, waitLong), now)
	if err != nil || got.IsZero() != want.IsZero() || got.Sub(want).Abs() > retryEarly {
		t.Fatalf("NextRetry %s = %v, %v; want %v, nil", what, got, err, want)
	}
}

// testNextRetry: NextRetry is when the earliest retry due after now is
// due; a retry due already, a dead letter, a leased entry, a held one, a
// ready one and another sink's retry do not count, and a retry that is
// fetched, or made due now, no longer does.
func testNextRetry(t *testing.T, l pipeline.Log) {
	q := queueAs[pipeline.RetryClock](t, l, sinkA, "pipeline.RetryClocks")
	_, holds := q.(pipeline.Holder)
	mustNextRetry(t, q, time.Now(), time.Time{}, "of an empty queue")
	appendIDs(t, l, ids("nr", 7), sinkA)
	appendIDs(t, l, []string{"nr-b"}, sinkB)
	ds := mustFetch(t, q, 6) // nr-0006 stays ready
	now := time.Now()
	in40s, inHour := now.Add(40*time.Second), now.Add(hour)
	s := []pipeline.Settlement{
		{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: inHour, Err: "503 Retry-After: 3600"},
		{Seq: ds[1].Seq, Outcome: pipeline.Retry, RetryAt: in40s, Err: "boom"},
		{Seq: ds[2].Seq, Outcome: pipeline.Retry, RetryAt: now.Add(-time.Minute), Err: "due"},
		{Seq: ds[3].Seq, Outcome: pipeline.Dead, Err: "dead"},
	}
	if holds { // nr-0004 held; else it stays leased, as nr-0005 does
		s = append(s, pipeline.Settlement{Seq: ds[4].Seq, Outcome: pipeline.Hold})
	}
	mustSettle(t, q, s...)
	qb := l.Queue(sinkB)
	db := mustFetch(t, qb, 1)
	mustSettle(t, qb, pipeline.Settlement{Seq: db[0].Seq, Outcome: pipeline.Retry, RetryAt: now.Add(time.Second), Err: "b"})

	mustNextRetry(t, q, now, in40s, "with retries due in 40s and in an hour, and one due already")
	mustNextRetry(t, q, in40s, inHour, "once the one in 40s is due")
	mustNextRetry(t, q, inHour, time.Time{}, "once all are due")
	if rc, ok := qb.(pipeline.RetryClock); ok {
		mustNextRetry(t, rc, now, now.Add(time.Second), "of the other sink")
	}

	// The due retry is fetched (leased), then settled again an hour and a
	// half away: the next is still the one in 40s.
	re := mustFetch(t, q, 1)
	if re[0].Event.ID != "nr-0002" {
		t.Fatalf("Fetch of the due retry = %s, want nr-0002", re[0].Event.ID)
	}
	mustNextRetry(t, q, now, in40s, "with the due retry leased")
	mustSettle(t, q, pipeline.Settlement{Seq: re[0].Seq, Outcome: pipeline.Retry, RetryAt: now.Add(90 * time.Minute), Err: "again"})
	mustNextRetry(t, q, inHour, now.Add(90*time.Minute), "after the due retry failed again")

	if h, ok := q.(pipeline.RetryHastener); ok {
		mustHastenRetries(t, h, nil, 10, 3, "of the three retries due later")
		mustNextRetry(t, q, time.Now(), time.Time{}, "once retry-now made every retry due")
	}
}

// testHastenWalkOnce: a walk (one retry-now) hastens the entries that
// waited as it began, each once. One it made due and that failed again
// meanwhile, and waits for a retry again, is passed by when the walk
// comes to it again (badgerlog's walk, earliest due first, would meet it
// again before the others), and the walk still reaches the ones that
// waited from the start; a new walk then hastens it. The same holds when
// the sink did not attempt it (Settlement.NotAttempted: its attempt count
// and last attempt stay as they were) and it waits again after the
// others (badgerlog's walk would meet it after its position).
func testHastenWalkOnce(t *testing.T, l pipeline.Log) {
	t.Run("failed", func(t *testing.T) { hastenWalkOnce(t, l, sinkA, "hw", false) })
	t.Run("not-attempted", func(t *testing.T) { hastenWalkOnce(t, l, sinkB, "hn", true) })
}

func hastenWalkOnce(t *testing.T, l pipeline.Log, sink, prefix string, notAttempted bool) {
	q := queueAs[pipeline.RetryHastener](t, l, sink, "pipeline.RetryHasteners")
	appendIDs(t, l, ids(prefix, 3), sink)
	ds := mustFetch(t, q, 3)
	later := time.Now().Add(hour)
	var s []pipeline.Settlement
	for i, d := range ds {
		s = append(s, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: later.Add(time.Duration(i) * time.Minute), Err: "503"})
	}
	mustSettle(t, q, s...)
	var w pipeline.RetryWalk
	mustHastenRetries(t, q, &w, 1, 1, "of three, one at a time")
	again := mustFetch(t, q, 1)
	// Failed again, due sooner than the two that still wait, and later
	// than it was due when the walk made it due; or not attempted, and
	// due after the two.
	attempt := 3
	if notAttempted {
		attempt = 2 // (the third Fetch counts the second attempt)
		mustSettle(t, q, pipeline.Settlement{Seq: again[0].Seq, Outcome: pipeline.Retry, NotAttempted: true, RetryAt: time.Now().Add(2 * hour), Err: "circuit open"})
	} else {
		mustSettle(t, q, pipeline.Settlement{Seq: again[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(hour), Err: "503 again"})
	}
	for n := 0; n < 2; {
		if w.Done {
			t.Fatalf("walk done after %d of the two that waited from the start", n)
		}
		m, err := q.HastenRetries(ctxFor(t, waitLong), &w, 1)
		if err != nil {
			t.Fatal(err)
		}
		n += m
		if n > 2 {
			t.Fatalf("walk hastened %d after the first, want 2 (the one that failed again was made due twice)", n)
		}
	}
	for !w.Done {
		if m, err := q.HastenRetries(ctxFor(t, waitLong), &w, 1); err != nil || m != 0 {
			t.Fatalf("walk's page after the two = %d, %v; want 0 (the one that failed again was made due twice)", m, err)
		}
	}
	got := deliveryIDs(mustFetch(t, q, 2))
	slices.Sort(got)
	want := slices.DeleteFunc(ids(prefix, 3), func(id string) bool { return id == again[0].Event.ID })
	if !slices.Equal(got, want) {
		t.Fatalf("Fetch after the walk = %v, want %v (those that waited from the start)", got, want)
	}
	fetchNone(t, q)
	mustHastenRetries(t, q, nil, 10, 1, "on a new walk, of the one that failed again")
	wantDeliveries(t, "Fetch after the new walk", mustFetch(t, q, 1), []string{again[0].Event.ID}, attempt)
}
