package badgerlog

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
)

// TestFailedFetchLosesNothing: a Fetch that fails part-way through its
// scan (here an event that cannot be read back, after two that can) hands
// out nothing, and the entries it had leased before failing are fetched
// again by the next Fetch: they go back to the queue with the leases (P2).
// Stats and Oldest count them all the while.
func TestFailedFetchLosesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	var es []pipeline.Entry
	for i := range 3 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Unix(int64(i+1), 0)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r"}}})
	}
	appended, err := l.Append(ctx, es)
	if err != nil {
		t.Fatal(err)
	}
	// Reopened, the log has no recent events at hand: Fetch reads them.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err = Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("a").(*queue)
	if err := l.waitQueues(ctx); err != nil { // before a record is spoiled: Open rebuilds the queues in the background
		t.Fatal(err)
	}
	var seqs []uint64
	var good []byte // the third event's record
	if err := l.db.View(func(txn *badger.Txn) error {
		for _, a := range appended {
			seq, err := lookup(context.Background(), txn, a.ID)
			if err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		item, err := txn.Get(eventKey(seqs[2]))
		if err != nil {
			return err
		}
		good, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	setRecord(t, l, seqs[2], []byte{0xff}) // a truncated varint: not an event record
	if ds, err := q.Fetch(ctx, 10); err == nil || len(ds) != 0 {
		t.Fatalf("Fetch over an unreadable event = %d deliveries, %v; want none and an error", len(ds), err)
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldest, err := q.Oldest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready != 3 || !oldest.Equal(time.Unix(1, 0)) {
		t.Fatalf("after the failed Fetch: Stats = %+v, Oldest = %v; want 3 ready, the oldest at %v", st, oldest, time.Unix(1, 0).UTC())
	}
	setRecord(t, l, seqs[2], good)
	if want, wantOldest := statsByEveryKey(t, q); st != want || !oldest.Equal(wantOldest) {
		t.Fatalf("after the failed Fetch: Stats = %+v, Oldest = %v; the log's keys say %+v, %v", st, oldest, want, wantOldest)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second) // lost entries would leave it waiting
	defer cancel()
	ds, err := q.Fetch(fctx, 10)
	if err != nil {
		t.Fatalf("Fetch after the failed one: %v", err)
	}
	var got []uint64
	for _, d := range ds {
		got = append(got, d.Seq)
	}
	if !slices.Equal(got, seqs) {
		t.Fatalf("Fetch after the failed one = seqs %v, want %v: the entries leased by the failed Fetch must be fetched again", got, seqs)
	}
}
