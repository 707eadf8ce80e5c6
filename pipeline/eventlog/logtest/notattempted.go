package logtest

import (
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// testRetryNotAttempted: an entry settled Retry with NotAttempted (the sink
// did not try it: sdk.NotAttempted) is fetched again not before its
// RetryAt, with the attempt count and LastError it had: one never
// attempted comes back as attempt 1 with no error, one that failed once as
// attempt 2 with that failure's error. Its delivery record, where the log
// keeps them, lists no attempt for it: state, attempts, failures and last
// error stay, NextAttemptAt says when it is due and NotAttemptedReason why
// it was not attempted, until the next attempt.
func testRetryNotAttempted(t *testing.T, l pipeline.Log) {
	q := l.Queue(sinkA)
	start := time.Now()
	appendIDs(t, l, ids("rn", 2), sinkA)
	ds := mustFetch(t, q, 2)
	byID := func(ds []pipeline.Delivery) map[string]pipeline.Delivery {
		m := map[string]pipeline.Delivery{}
		for _, d := range ds {
			m[d.Event.ID] = d
		}
		return m
	}
	first := byID(ds)
	mustSettle(t, q, pipeline.Settlement{Seq: first["rn-0001"].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "503"})
	re := mustFetch(t, q, 1)
	if re[0].Event.ID != "rn-0001" || re[0].Attempt != 2 || re[0].LastError != "503" {
		t.Fatalf("Fetch of a due retry = %s attempt %d error %q, want rn-0001 attempt 2 error 503", re[0].Event.ID, re[0].Attempt, re[0].LastError)
	}
	retryAt := time.Now().Add(time.Second)
	mustSettle(t, q,
		pipeline.Settlement{Seq: first["rn-0000"].Seq, Outcome: pipeline.Retry, RetryAt: retryAt, Err: "not sent in time", NotAttempted: true},
		pipeline.Settlement{Seq: re[0].Seq, Outcome: pipeline.Retry, RetryAt: retryAt, Err: "throttled", NotAttempted: true})
	if time.Until(retryAt) > 2*waitShort { // a loaded machine may have used the second up
		fetchNone(t, q)
	}
	if dl, ok := unwrap(l).(pipeline.DeliveryLog); ok {
		wantRecords(t, dl, "rn-0000", start,
			wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateQueued, next: retryAt, notAttempted: "not sent in time"})
		rs := wantRecords(t, dl, "rn-0001", start,
			wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateRetrying, attempts: 1, lastErr: "503", attempted: true, next: retryAt, notAttempted: "throttled"})
		if len(rs[0].Failures) != 1 || rs[0].Failures[0].Err != "503" {
			t.Errorf("Deliveries(rn-0001) failures = %+v, want only the attempt's (503)", rs[0].Failures)
		}
	}
	again := mustFetch(t, q, 2)
	if at := time.Now(); at.Before(retryAt.Add(-retryEarly)) {
		t.Errorf("Fetch returned the entries not attempted at %v, %v before their RetryAt", at, retryAt.Sub(at))
	}
	got := byID(again)
	if d := got["rn-0000"]; d.Attempt != 1 || d.LastError != "" {
		t.Errorf("Fetch of rn-0000 after it was not attempted = attempt %d, error %q; want attempt 1, no error (as before)", d.Attempt, d.LastError)
	}
	if d := got["rn-0001"]; d.Attempt != 2 || d.LastError != "503" {
		t.Errorf("Fetch of rn-0001 after it was not attempted = attempt %d, error %q; want attempt 2, error 503 (as before)", d.Attempt, d.LastError)
	}
	mustSettle(t, q, ack(again...)...)
	if dl, ok := unwrap(l).(pipeline.DeliveryLog); ok {
		wantRecords(t, dl, "rn-0000", start,
			wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateDelivered, attempts: 1, attempted: true, delivered: true})
		wantRecords(t, dl, "rn-0001", start,
			wantRecord{sink: sinkA, route: "route-" + sinkA, state: pipeline.StateDelivered, attempts: 2, lastErr: "503", attempted: true, delivered: true})
	}
}
