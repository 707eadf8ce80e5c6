package badgerlog_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/logtest"
)

func open(t *testing.T, dir string) *badgerlog.DB {
	t.Helper()
	db, err := badgerlog.Open(dir, nil)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	return db
}

func TestContract(t *testing.T) {
	logtest.Run(t, func(t *testing.T) pipeline.Log {
		db := open(t, t.TempDir())
		t.Cleanup(func() { db.Close() })
		return db
	})
}

func TestDurable(t *testing.T) {
	logtest.RunDurable(t, func(t *testing.T, dir string) pipeline.Log {
		return open(t, dir)
	})
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	defer db.Close()
	if _, err := badgerlog.Open(dir, nil); err == nil {
		t.Fatalf("second Open(%s) = nil, want an error: the directory is in use", dir)
	}
}

func TestPruneKeepsWhatIsStillQueued(t *testing.T) {
	ctx := context.Background()
	db := open(t, t.TempDir())
	defer db.Close()
	old := time.Now().Add(-48 * time.Hour)
	mk := func(id string, sinks ...string) pipeline.Entry {
		e := pipeline.Entry{Event: pipeline.Event{ID: id, Source: "s", ReceivedAt: old, Body: []byte(`{}`)}}
		for _, s := range sinks {
			e.Targets = append(e.Targets, pipeline.Target{Sink: s, Route: "r"})
		}
		return e
	}
	_, err := db.Append(ctx, []pipeline.Entry{
		mk("unrouted"), mk("acked", "a"), mk("queued", "a"), mk("retrying", "a"), mk("dead", "a"), mk("two-sinks", "a", "b"),
	})
	if err != nil {
		t.Fatal(err)
	}
	q := db.Queue("a")
	got, err := q.Fetch(ctx, 10)
	if err != nil || len(got) != 5 {
		t.Fatalf("Fetch = %d entries, %v; want 5", len(got), err)
	}
	byID := map[string]uint64{}
	for _, d := range got {
		byID[d.Event.ID] = d.Seq
	}
	err = q.Settle(ctx, []pipeline.Settlement{
		{Seq: byID["acked"], Outcome: pipeline.Ack},
		{Seq: byID["retrying"], Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "later"},
		{Seq: byID["dead"], Outcome: pipeline.Dead, Err: "no"},
		{Seq: byID["two-sinks"], Outcome: pipeline.Ack}, // still queued for b
	})
	if err != nil {
		t.Fatal(err)
	}
	// "queued" stays leased, not settled: still in a's queue.
	if n := badgerlog.DeliveryKeys(db); n != 4 {
		t.Fatalf("before Prune: %d delivery records, want 4 (one per settlement)", n)
	}

	n, err := db.Prune(time.Now().Add(-24 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("Prune removed %d events, want 2 (unrouted, acked)", n)
	}
	if n := badgerlog.DeliveryKeys(db); n != 3 {
		t.Errorf("after Prune: %d delivery records, want 3 (acked's went with it)", n)
	}
	for id, wantKept := range map[string]bool{
		"unrouted": false, "acked": false, "queued": true, "retrying": true, "dead": true, "two-sinks": true,
	} {
		_, err := db.Event(ctx, id)
		if kept := err == nil; kept != wantKept {
			t.Errorf("after Prune, Event(%s) err = %v; want kept=%v", id, err, wantKept)
		}
	}
	if n, _ := db.Prune(old.Add(-time.Hour)); n != 0 {
		t.Errorf("Prune with a cutoff before every event removed %d, want 0", n)
	}
}

// TestRetentionInBackground runs the maintenance loop with a tiny retention:
// delivered events go, and what a queue or a dead-letter queue still holds
// stays (P6).
func TestRetentionInBackground(t *testing.T) {
	ctx := context.Background()
	db, err := badgerlog.Open(t.TempDir(), &badgerlog.Options{Retention: time.Second, MaintenanceInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var entries []pipeline.Entry
	for _, id := range []string{"delivered", "waiting", "dead"} {
		entries = append(entries, pipeline.Entry{
			Event:   pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r"}},
		})
	}
	if _, err := db.Append(ctx, entries); err != nil {
		t.Fatal(err)
	}
	q := db.Queue("a")
	got, err := q.Fetch(ctx, 3)
	if err != nil || len(got) != 3 {
		t.Fatalf("Fetch = %d, %v", len(got), err)
	}
	err = q.Settle(ctx, []pipeline.Settlement{
		{Seq: got[0].Seq, Outcome: pipeline.Ack},
		{Seq: got[1].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "later"},
		{Seq: got[2].Seq, Outcome: pipeline.Dead, Err: "no"},
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := db.Event(ctx, "delivered")
		if errors.Is(err, pipeline.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a delivered event older than the retention is still there after 10s (err %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range []string{"waiting", "dead"} {
		if _, err := db.Event(ctx, id); err != nil {
			t.Errorf("Event(%s) after retention = %v; a queued or dead-letter event must stay", id, err)
		}
	}
}

// TestRefusesWritesWhenTheDiskCouldFillUp: with less free space than the
// memory-mapped files may still claim, appends and settles fail with
// ErrFull (ingest answers 503) instead of the process dying of SIGBUS, and
// they work again once space is free.
func TestRefusesWritesWhenTheDiskCouldFillUp(t *testing.T) {
	ctx := context.Background()
	db := open(t, t.TempDir())
	defer db.Close()
	free := int64(1 << 40)
	badgerlog.SetSpaceProbe(db, func() (int64, int64) { return free, 128 << 20 })
	e := func(id string) []pipeline.Entry {
		return []pipeline.Entry{{Event: pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r"}}}}
	}
	if _, err := db.Append(ctx, e("before")); err != nil {
		t.Fatal(err)
	}
	d, err := db.Queue("a").Fetch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	free = 100 << 20 // less than the 128 MiB of holes plus the margin
	if _, err := db.Append(ctx, e("during")); !errors.Is(err, pipeline.ErrFull) {
		t.Errorf("Append with the disk nearly full = %v, want ErrFull", err)
	}
	if err := db.Queue("a").Settle(ctx, []pipeline.Settlement{{Seq: d[0].Seq, Outcome: pipeline.Ack}}); !errors.Is(err, pipeline.ErrFull) {
		t.Errorf("Settle with the disk nearly full = %v, want ErrFull", err)
	}
	// A dispatcher without an order_key releases what is held at start:
	// with nothing held there is nothing to write, and so no refusal (it
	// would be retried every second, for ever, on a small disk).
	if n, err := db.Queue("a").(pipeline.Holder).Release(ctx, nil); n != 0 || err != nil {
		t.Errorf("Release(all) with nothing held and the disk nearly full = %d, %v; want 0, nil", n, err)
	}
	if n, err := db.Queue("a").(pipeline.Holder).Release(ctx, []uint64{d[0].Seq}); n != 0 || err != nil {
		t.Errorf("Release(a seq not held) with the disk nearly full = %d, %v; want 0, nil", n, err)
	}
	free = 1 << 40
	if _, err := db.Append(ctx, e("after")); err != nil {
		t.Errorf("Append once space is free = %v", err)
	}
	if err := db.Queue("a").Settle(ctx, []pipeline.Settlement{{Seq: d[0].Seq, Outcome: pipeline.Ack}}); err != nil {
		t.Errorf("Settle once space is free = %v", err)
	}
}

// TestHashedDedupKeyMeetsNoLiteral (issue 15 item 14): a dedup key too long
// to store is kept as its SHA-256; a short literal key spelling that hash
// is another key all the same.
func TestHashedDedupKeyMeetsNoLiteral(t *testing.T) {
	ctx := context.Background()
	db := open(t, t.TempDir())
	defer db.Close()
	long := strings.Repeat("k", 40<<10)
	sum := sha256.Sum256([]byte(long))
	hexSum := hex.EncodeToString(sum[:])
	keys := []string{long, "sha256:" + hexSum, "\x00h" + hexSum, "\x00s\x00h" + hexSum}
	for i, k := range keys {
		e := pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("e%d", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			DedupKey: k, DedupWindow: time.Hour}
		res, err := db.Append(ctx, []pipeline.Entry{e})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Duplicate {
			t.Errorf("key %d (%.20q…) is a duplicate of %s, want a new event", i, k, res[0].ID)
		}
	}
	// Premise: the log does dedup these keys.
	e := pipeline.Entry{Event: pipeline.Event{ID: "again", Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
		DedupKey: long, DedupWindow: time.Hour}
	if res, err := db.Append(ctx, []pipeline.Entry{e}); err != nil || !res[0].Duplicate {
		t.Errorf("the long key again = %+v, %v; want a duplicate of e0", res, err)
	}
}
