package badgerlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
)

// TestFailedFetchLosesNothing: a Fetch that fails part-way through its
// scan (here a queue entry that cannot be decoded, after two that can)
// hands out nothing, and the entries it had leased before failing are
// fetched again by the next Fetch: the cursor goes back with the leases
// (P2). Stats and Oldest count them all the while.
func TestFailedFetchLosesNothing(t *testing.T) {
	ctx := context.Background()
	l, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var es []pipeline.Entry
	for i := range 3 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Unix(int64(i+1), 0)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r"}}})
	}
	if _, err := l.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("a").(*queue)
	var keys [][]byte
	var good []byte // the third entry's value
	if err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: q.ready})
		defer it.Close()
		for it.Seek(q.ready); it.ValidForPrefix(q.ready); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		if len(keys) != 3 {
			return fmt.Errorf("%d ready keys, want 3: the test's premise is wrong", len(keys))
		}
		item, err := txn.Get(keys[2])
		if err != nil {
			return err
		}
		good, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	set := func(v []byte) {
		t.Helper()
		if err := l.db.Update(func(txn *badger.Txn) error { return txn.Set(keys[2], v) }); err != nil {
			t.Fatal(err)
		}
	}
	set([]byte{0xff}) // a truncated varint: not a Target
	if ds, err := q.Fetch(ctx, 10); err == nil || len(ds) != 0 {
		t.Fatalf("Fetch over an undecodable entry = %d deliveries, %v; want none and an error", len(ds), err)
	}
	want, wantOldest := statsByEveryKey(t, q)
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldest, err := q.Oldest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st != want || st.Ready != 3 || !oldest.Equal(wantOldest) || !oldest.Equal(time.Unix(1, 0)) {
		t.Fatalf("after the failed Fetch: Stats = %+v, Oldest = %v; counting every key: %+v, %v; want 3 ready, the oldest at %v",
			st, oldest, want, wantOldest, time.Unix(1, 0).UTC())
	}
	set(good)
	ds, err := q.Fetch(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, d := range ds {
		got = append(got, d.Seq)
	}
	var wantSeqs []uint64
	for _, k := range keys {
		wantSeqs = append(wantSeqs, binary.BigEndian.Uint64(k[len(q.ready):]))
	}
	if !slices.Equal(got, wantSeqs) {
		t.Fatalf("Fetch after the failed one = seqs %v, want %v: the entries leased by the failed Fetch must be fetched again", got, wantSeqs)
	}
}
