package badgerlog

import (
	"context"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// TestFetchSeesRetriesWrittenAfterAnEmptyScan: once a scan found no retry
// entry, Fetch skips the retry keys (noRetries), and each way a retry
// entry can appear afterwards ends that: a settlement that retries, a
// replay (Requeue), a dead letter retried, a held entry released, and a
// retry entry fetched and left unsettled when the next scan runs. Held
// entries, never due, do not keep scans reading.
func TestFetchSeesRetriesWrittenAfterAnEmptyScan(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer func() { l.Close() }()
	appendN(t, l, "k", 3, 3) // seqs 1..3 to s and t
	q := l.Queue("s").(*queue)
	fetch := func(want int) []pipeline.Delivery {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ds, err := q.Fetch(c, 10)
		if err != nil || len(ds) != want {
			t.Fatalf("Fetch = %d deliveries, %v; want %d", len(ds), err, want)
		}
		return ds
	}
	empty := func(why string) { // the premise of each step: scans skip the retry keys now
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if ds, err := q.Fetch(c, 10); len(ds) != 0 || err == nil {
			t.Fatalf("Fetch %s = %d deliveries, %v; want none", why, len(ds), err)
		}
		q.mu.Lock()
		skip := q.noRetries && q.noRetriesAt == l.retryWrites.Load()
		q.mu.Unlock()
		if !skip {
			t.Fatalf("%s: scans still read the retry keys", why)
		}
	}

	fetchSeq := func(after string, seq uint64) []pipeline.Delivery { // the one entry seq
		t.Helper()
		ds := fetch(1)
		if ds[0].Seq != seq {
			t.Fatalf("after %s, Fetch gave seq %d; want %d", after, ds[0].Seq, seq)
		}
		return ds
	}

	ds := fetch(3)
	settleAll(t, q, ds[:2], pipeline.Ack)
	empty("with one ready entry leased")
	settleAll(t, q, ds[2:], pipeline.Retry) // due now
	ds = fetchSeq("a retry", 3)
	if ds[0].Attempt != 2 {
		t.Fatalf("the retry is attempt %d; want 2", ds[0].Attempt)
	}
	// A retry entry fetched and not settled: the scan that finds no other
	// must not conclude there is none.
	c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if more, _ := q.Fetch(c, 10); len(more) != 0 {
		t.Fatalf("Fetch gave %d more", len(more))
	}
	cancel()
	q.mu.Lock()
	skipping := q.noRetries
	q.mu.Unlock()
	if skipping {
		t.Fatal("with a retry entry leased, scans skip the retry keys")
	}
	settleAll(t, q, ds, pipeline.Ack)
	empty("after the retry was acked")

	if n, err := q.Requeue(ctx, []pipeline.Requeue{{Seq: 1, Route: "r"}}); err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v; want 1", n, err)
	}
	settleAll(t, q, fetchSeq("a replay", 1), pipeline.Dead)
	empty("after the replay went to the dead letters")

	if n, err := q.RetryDead(ctx, []uint64{1}); err != nil || n != 1 {
		t.Fatalf("RetryDead = %d, %v; want 1", n, err)
	}
	settleAll(t, q, fetchSeq("a dead letter's retry", 1), pipeline.Ack)
	empty("after the dead letter's retry was acked")

	// A held entry (delivery.order_key) is never due: scans skip it too,
	// until its release writes a retry entry.
	if n, err := q.Requeue(ctx, []pipeline.Requeue{{Seq: 2, Route: "r"}}); err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v; want 1", n, err)
	}
	settleAll(t, q, fetchSeq("a replay", 2), pipeline.Hold)
	empty("with an entry held")
	if n, err := q.Release(ctx, []uint64{2}); err != nil || n != 1 {
		t.Fatalf("Release = %d, %v; want 1", n, err)
	}
	settleAll(t, q, fetchSeq("a release", 2), pipeline.Ack)
	empty("at the end")
}
