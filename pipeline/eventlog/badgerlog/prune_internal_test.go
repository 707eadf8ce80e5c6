package badgerlog

import (
	"context"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// TestPruneKeepsWhatIsSettledDuringIt: retention locks no queue, so a
// settlement can land between its snapshot and its look at the queues'
// memory. An entry settled to a retry then is in neither the memory nor
// the snapshot's retry keys: the event must still be kept (P6), and it is
// removed only once delivered.
func TestPruneKeepsWhatIsSettledDuringIt(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	if _, err := l.Append(ctx, []pipeline.Entry{{
		Event:   pipeline.Event{ID: "e", Source: "src", ReceivedAt: time.Unix(1, 0)},
		Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
	}}); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("s")
	ds, err := q.Fetch(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Fetch = %d, %v; want 1", len(ds), err)
	}
	settled := false
	pruneHook = func() {
		if settled {
			return
		}
		settled = true
		if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "busy"}}); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { pruneHook = nil })
	if n, err := l.Prune(time.Now()); err != nil || n != 0 {
		t.Fatalf("Prune while the entry is settled to a retry = %d, %v; want 0: the event is still referred to", n, err)
	}
	if !settled {
		t.Fatal("the settlement did not happen during Prune: the test's premise is wrong")
	}
	if n, err := l.Prune(time.Now()); err != nil || n != 0 {
		t.Fatalf("Prune with the entry retrying = %d, %v; want 0", n, err)
	}
	ds, err = q.Fetch(ctx, 1)
	if err != nil || len(ds) != 1 || ds[0].Event.ID != "e" {
		t.Fatalf("Fetch of the retry = %+v, %v; want event e", ds, err)
	}
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Ack}}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Prune(time.Now()); err != nil || n != 1 {
		t.Fatalf("Prune once delivered = %d, %v; want 1", n, err)
	}
}

// TestPruneRemovesDeliveryRecords: an event removed by retention takes its
// delivery records (s/ keys: here one retried before its ack) and its
// first-attempt acks with it.
func TestPruneRemovesDeliveryRecords(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	appendN(t, l, "v7p", 6, 3)
	for _, sink := range []string{"s", "t"} {
		q := l.Queue(sink)
		ds, err := q.Fetch(ctx, 10)
		if err != nil || len(ds) != 6 {
			t.Fatalf("Fetch(%s) = %d, %v; want 6", sink, len(ds), err)
		}
		ss := make([]pipeline.Settlement, len(ds))
		for i, d := range ds {
			ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
		}
		ss[2] = pipeline.Settlement{Seq: ds[2].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "busy"}
		if err := q.Settle(ctx, ss); err != nil {
			t.Fatal(err)
		}
		ds, err = q.Fetch(ctx, 10)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Fetch(%s) of the retry = %d, %v; want 1", sink, len(ds), err)
		}
		if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Ack}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := countKeys(t, l, preDelivery); n != 2 {
		t.Fatalf("%d delivery records before Prune, want 2 (the retried event's, at s and t): the test's premise", n)
	}
	if n, err := l.Prune(time.Now().Add(time.Hour)); err != nil || n != 6 {
		t.Fatalf("Prune = %d, %v; want 6", n, err)
	}
	for _, p := range [][]byte{preEvent, preDelivery, preAcks, preTime} {
		if n := countKeys(t, l, p); n != 0 {
			t.Errorf("%d %s keys after every event was removed, want 0", n, p)
		}
	}
}
