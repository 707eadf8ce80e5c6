package badgerlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
)

// countKeys counts the keys under prefix.
func countKeys(t *testing.T, l *DB, prefix []byte) int {
	t.Helper()
	n := 0
	if err := l.db.View(func(txn *badger.Txn) error { n = countFrom(txn, prefix, prefix); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// settleAll acks (or settles with out) the deliveries ds at q.
func settleAll(t *testing.T, q pipeline.Queue, ds []pipeline.Delivery, out pipeline.Outcome) {
	t.Helper()
	var ss []pipeline.Settlement
	for _, d := range ds {
		ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: out, Err: "x", RetryAt: time.Now()})
	}
	if err := q.Settle(context.Background(), ss); err != nil {
		t.Fatal(err)
	}
}

// TestAcksStandForDeliveryRecords: first-attempt acks are written as one
// key per settlement and sink (no delivery record per event), and every
// reader sees the same record as before: Deliveries, the state filter of
// Events, a restart (nothing queued again), a replay after the ack (the
// attempt it made is kept); acks settled out of order, below an earlier
// settlement's, get records of their own and read the same.
func TestAcksStandForDeliveryRecords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	defer func() { l.Close() }()
	appendN(t, l, "k", 20, 20) // seqs 1..20 to s and t (route "r")
	s, tq := l.Queue("s"), l.Queue("t")
	ds, err := s.Fetch(ctx, 20)
	if err != nil || len(ds) != 20 {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	before := time.Now()
	settleAll(t, s, ds[10:], pipeline.Ack) // 11..20 first
	settleAll(t, s, ds[:10], pipeline.Ack) // then 1..10: below the first settlement's
	dt, err := tq.Fetch(ctx, 20)
	if err != nil || len(dt) != 20 {
		t.Fatalf("Fetch = %d, %v", len(dt), err)
	}
	settleAll(t, tq, dt, pipeline.Ack)
	after := time.Now()
	if a, d := countKeys(t, l, preAcks), countKeys(t, l, preDelivery); a != 2 || d != 10 {
		t.Fatalf("%d Acks and %d delivery records, want 2 (s: 11..20, t: 1..20) and 10 (s: 1..10, acked out of order)", a, d)
	}
	check := func(l *DB) {
		t.Helper()
		for i := range 20 {
			id := fmt.Sprintf("k-%04d", i)
			recs, err := l.Deliveries(ctx, id)
			if err != nil || len(recs) != 2 {
				t.Fatalf("Deliveries(%s) = %+v, %v", id, recs, err)
			}
			for _, r := range recs {
				if r.State != pipeline.StateDelivered || r.Attempts != 1 || r.Route != "r" ||
					r.DeliveredAt.Before(before.Truncate(0)) || r.DeliveredAt.After(after) || !r.FirstAttemptAt.Equal(r.DeliveredAt) {
					t.Fatalf("Deliveries(%s) = %+v; want delivered at the first attempt by route r, between %v and %v", id, r, before, after)
				}
			}
		}
		evs, _, err := l.Events(ctx, pipeline.EventFilter{State: pipeline.StateDelivered, Sink: "t", Limit: 100})
		if err != nil || len(evs) != 20 {
			t.Fatalf("Events delivered to t = %d, %v; want 20", len(evs), err)
		}
		if evs, _, err := l.Events(ctx, pipeline.EventFilter{State: "pending", Limit: 100}); err != nil || len(evs) != 0 {
			t.Fatalf("Events pending = %d, %v; want none", len(evs), err)
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, nil)
	check(l)
	for _, sink := range []string{"s", "t"} {
		if st, err := l.Queue(sink).Stats(ctx); err != nil || st.Ready != 0 {
			t.Fatalf("Stats of %s after a restart = %+v, %v; want nothing queued", sink, st, err)
		}
	}

	// A replay after the ack: the record keeps the first attempt.
	if n, err := l.Queue("t").Requeue(ctx, []pipeline.Requeue{{Seq: dt[3].Seq, Route: "r"}}); err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v", n, err)
	}
	rd, err := l.Queue("t").Fetch(ctx, 1)
	if err != nil || len(rd) != 1 || rd[0].Seq != dt[3].Seq {
		t.Fatalf("Fetch of the replay = %+v, %v", rd, err)
	}
	settleAll(t, l.Queue("t"), rd, pipeline.Ack)
	recs, err := l.Deliveries(ctx, rd[0].Event.ID)
	if err != nil || recs[1].Sink != "t" || recs[1].State != pipeline.StateDelivered || recs[1].Attempts != 2 || recs[1].FirstAttemptAt.After(after) {
		t.Fatalf("Deliveries after a replay = %+v, %v; want t delivered, 2 attempts, the first one kept", recs, err)
	}
	// A replay without a route: its record says so, not the route the
	// event was queued by at append.
	if n, err := l.Queue("t").Requeue(ctx, []pipeline.Requeue{{Seq: dt[4].Seq}}); err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v", n, err)
	}
	if recs, err := l.Deliveries(ctx, dt[4].Event.ID); err != nil || recs[1].State != pipeline.StateQueued || recs[1].Route != "" || recs[1].Attempts != 1 {
		t.Fatalf("Deliveries after a replay without a route = %+v, %v; want t queued, no route, the first attempt kept", recs, err)
	}
}

// TestRetentionRemovesAcks: an Acks goes once every event it holds is gone,
// not before.
func TestRetentionRemovesAcks(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	appendN(t, l, "p", 10, 10)
	for _, sink := range []string{"s", "t"} {
		ds, err := l.Queue(sink).Fetch(ctx, 10)
		if err != nil || len(ds) != 10 {
			t.Fatalf("Fetch = %d, %v", len(ds), err)
		}
		if sink == "t" {
			settleAll(t, l.Queue(sink), ds[:5], pipeline.Ack) // 6..10 stay leased at t
			continue
		}
		settleAll(t, l.Queue(sink), ds, pipeline.Ack)
	}
	if n, err := l.Prune(time.Now().Add(time.Hour)); err != nil || n != 5 {
		t.Fatalf("Prune = %d, %v; want 5 (1..5)", n, err)
	}
	if a := countKeys(t, l, preAcks); a != 1 {
		t.Fatalf("%d Acks after removing 1..5, want 1: t's (1..5) gone, s's (1..10) kept for 6..10", a)
	}
	l.queue("t").mu.Lock()
	var leased []pipeline.Delivery
	for seq := range l.queue("t").leases {
		leased = append(leased, pipeline.Delivery{Seq: seq})
	}
	l.queue("t").mu.Unlock()
	if len(leased) != 5 {
		t.Fatalf("%d entries leased at t, want 5 (6..10): the test's premise is wrong", len(leased))
	}
	settleAll(t, l.Queue("t"), leased, pipeline.Ack)
	if n, err := l.Prune(time.Now().Add(time.Hour)); err != nil || n != 5 {
		t.Fatalf("Prune = %d, %v; want 5 (6..10)", n, err)
	}
	if a := countKeys(t, l, preAcks); a != 0 {
		t.Fatalf("%d Acks with every event gone, want 0", a)
	}
}

// TestRetentionRemovesAcksBehindAKeptEvent: an old event kept for long (a
// dead letter nobody drops, a held entry) does not keep every later Acks:
// one whose events are all gone goes, as the delivery records it replaced
// went with their events (P9).
func TestRetentionRemovesAcksBehindAKeptEvent(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	appendN(t, l, "p", 1, 1) // seq 1: dead at t, kept
	for _, sink := range []string{"s", "t"} {
		ds, err := l.Queue(sink).Fetch(ctx, 1)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Fetch = %d, %v", len(ds), err)
		}
		out := pipeline.Ack
		if sink == "t" {
			out = pipeline.Dead
		}
		settleAll(t, l.Queue(sink), ds, out)
	}
	appendN(t, l, "q", 20, 20) // seqs 2..21: acked one at a time at s and t
	for _, sink := range []string{"s", "t"} {
		for range 20 {
			ds, err := l.Queue(sink).Fetch(ctx, 1)
			if err != nil || len(ds) != 1 {
				t.Fatalf("Fetch = %d, %v", len(ds), err)
			}
			settleAll(t, l.Queue(sink), ds, pipeline.Ack)
		}
	}
	if n, err := l.Prune(time.Now().Add(time.Hour)); err != nil || n != 20 {
		t.Fatalf("Prune = %d, %v; want 20 (2..21)", n, err)
	}
	if a := countKeys(t, l, preAcks); a != 1 {
		t.Fatalf("%d Acks with only event 1 kept, want 1 (s's ack of 1): the 40 of 2..21 hold no kept event", a)
	}
	recs, err := l.Deliveries(ctx, "p-0000")
	if err != nil || len(recs) != 2 || recs[0].State != pipeline.StateDelivered || recs[1].State != pipeline.StateDead {
		t.Fatalf("Deliveries of the kept event = %+v, %v", recs, err)
	}
}

// TestRetentionRemovesManyAcks: retention removes any number of Acks, in
// transactions Badger takes (a Prune that removes much, after downtime or
// a shorter retention, found more than one transaction holds and failed
// every pass after, the Acks staying without bound).
func TestRetentionRemovesManyAcks(t *testing.T) {
	ctx := context.Background()
	// Badger takes ~2400 writes per transaction: retention's batches of
	// events (1000 writes here) fit, the 3000 Acks do not.
	l := mustOpen(t, t.TempDir(), &Options{MemTableSize: 3 << 19})
	defer l.Close()
	sinks := []string{"s", "t", "u", "v", "w", "x"}
	const n = 500
	for i := 0; i < n; i += 100 {
		var es []pipeline.Entry
		for j := i; j < i+100; j++ {
			id := fmt.Sprintf("m-%04d", j)
			e := pipeline.Entry{Event: pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)}}
			for _, s := range sinks {
				e.Targets = append(e.Targets, pipeline.Target{Sink: s, Route: "r"})
			}
			es = append(es, e)
		}
		if _, err := l.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
	}
	for _, sink := range sinks {
		for range n {
			ds, err := l.Queue(sink).Fetch(ctx, 1)
			if err != nil || len(ds) != 1 {
				t.Fatalf("Fetch = %d, %v", len(ds), err)
			}
			settleAll(t, l.Queue(sink), ds, pipeline.Ack) // one Acks each
		}
	}
	if a := countKeys(t, l, preAcks); a != len(sinks)*n {
		t.Fatalf("%d Acks, want %d", a, len(sinks)*n)
	}
	if removed, err := l.Prune(time.Now().Add(time.Hour)); err != nil || removed != n {
		t.Fatalf("Prune = %d, %v; want %d", removed, err, n)
	}
	if a := countKeys(t, l, preAcks); a != 0 {
		t.Fatalf("%d Acks with every event gone, want 0", a)
	}
}
