package badgerlog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/pipelined/pipelined/pipeline"
)

func TestIDBucket(t *testing.T) {
	for _, tc := range []struct {
		id     string
		bucket uint64
		ok     bool
	}{
		{"0190a4c2-7b3f-7def-8abc-0123456789ab", 0x0190a4c27b3f >> bucketBits, true},
		{"0190a4c2-7b3f-7def-babc-0123456789ab", 0x0190a4c27b3f >> bucketBits, true},
		{"0190A4C2-7B3F-7DEF-8ABC-0123456789AB", 0, false}, // not as ingest writes it: i/
		{"0190a4c2-7b3f-4def-8abc-0123456789ab", 0, false}, // v4
		{"0190a4c2-7b3f-7def-8abc-0123456789a", 0, false},
		{"0190a4c2x7b3f-7def-8abc-0123456789ab", 0, false},
		{"0190a4c2-7b3f-7def-8abc-0123456789ag", 0, false},
		{"0190a4g2-7b3f-7def-8abc-0123456789ab", 0, false},
		{"ev-0001", 0, false},
		{"", 0, false},
	} {
		b, ok := idBucket(tc.id)
		if b != tc.bucket || ok != tc.ok {
			t.Errorf("idBucket(%q) = %#x, %v; want %#x, %v", tc.id, b, ok, tc.bucket, tc.ok)
		}
	}
	id := uuid.Must(uuid.NewV7())
	b, ok := idBucket(id.String())
	sec, nsec := id.Time().UnixTime()
	if ms := uint64(sec*1000 + nsec/1e6); !ok || b != ms>>bucketBits {
		t.Errorf("idBucket(%s) = %#x, %v; want its milliseconds >> %d", id, b, ok, bucketBits)
	}
}

// found checks that every id is found by Event, Deliveries and Events.
func found(t *testing.T, l *DB, ids ...string) {
	t.Helper()
	ctx := context.Background()
	for _, id := range ids {
		if ev, err := l.Event(ctx, id); err != nil || ev.ID != id {
			t.Fatalf("Event(%s) = %q, %v", id, ev.ID, err)
		}
		if ds, err := l.Deliveries(ctx, id); err != nil || len(ds) != 2 {
			t.Fatalf("Deliveries(%s) = %d records, %v; want 2", id, len(ds), err)
		}
		if evs, _, err := l.Events(ctx, pipeline.EventFilter{ID: id}); err != nil || len(evs) != 1 || evs[0].Event.ID != id {
			t.Fatalf("Events(ID: %s) = %d events, %v; want it", id, len(evs), err)
		}
	}
}

func TestTimeIndexFindsEventsWithoutAKeyEach(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	appendN(t, l, "v7a", 300, 9)
	appendN(t, l, "plain", 5, 5)
	var real []pipeline.Entry
	for range 50 {
		id := uuid.Must(uuid.NewV7()).String() // as ingest makes them
		real = append(real, pipeline.Entry{
			Event:   pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "s", Route: "r"}, {Sink: "t", Route: "r"}},
		})
	}
	if _, err := l.Append(ctx, real); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, l, preIndex); n != 5 {
		t.Errorf("%d i/ keys, want 5: one for each id that is no UUIDv7", n)
	}
	// 300 events 13 ms apart, 9 per Append, in 128 ms buckets: a run per
	// Append and bucket, ~1.3 per Append; and a few for the 50 made now.
	if n := countKeys(t, l, preTime); n < 34 || n > 80 {
		t.Errorf("%d t/ keys for 350 events with UUIDv7 ids, want one per Append and bucket (34 to 80)", n)
	}
	for j := range 300 {
		found(t, l, testID("v7a", j))
	}
	for j := range 5 {
		found(t, l, testID("plain", j))
	}
	for _, e := range real {
		found(t, l, e.Event.ID)
	}
	for _, id := range []string{
		"019e5d9b-b400-7123-8456-000000000999", // in a bucket of the v7a events, not one of them
		"019e5d9b-b400-7123-8456-00000000000",  // no UUID
		"0190a4c2-7b3f-7def-8abc-0123456789ab", // in no bucket
	} {
		if _, err := l.Event(ctx, id); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("Event(%s) = %v, want ErrNotFound", id, err)
		}
	}
}

// TestTimeIndexKeepsOlderIndexKeys: a log that a version before the time
// index wrote has an i/ key per event. Its events are still found, and
// retention removes their i/ keys and the new events' runs.
func TestTimeIndexKeepsOlderIndexKeys(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	appendN(t, l, "v7old", 40, 8)
	// Make the log what the older version left: i/ keys, no runs, no
	// m/time-from.
	txn := l.newTxn()
	for j := range 40 {
		if err := txn.Set(indexKey(testID("v7old", j)), seqBytes(uint64(j+1))); err != nil {
			t.Fatal(err)
		}
	}
	err := l.db.View(func(r *badger.Txn) error {
		it := r.NewIterator(badger.IteratorOptions{Prefix: preTime})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := txn.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = txn.Delete(keyTimeFrom)
	}
	if err == nil {
		err = l.commit(txn)
	}
	txn.Discard()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = mustOpen(t, dir, nil)
	defer l.Close()
	if got := l.timeFrom.Load(); got != 0 {
		t.Fatalf("timeFrom of the older log = %d, want 0 (none)", got)
	}
	appendN(t, l, "v7new", 40, 8)
	if got := l.timeFrom.Load(); got != 41 {
		t.Fatalf("timeFrom after the first Append = %d, want 41", got)
	}
	if n, m := countKeys(t, l, preIndex), countKeys(t, l, preTime); n != 40 || m == 0 {
		t.Fatalf("%d i/ and %d t/ keys; want the older 40 and runs for the new events", n, m)
	}
	for j := range 40 {
		found(t, l, testID("v7old", j), testID("v7new", j))
	}

	for _, sink := range []string{"s", "t"} {
		q := l.Queue(sink)
		ds, err := q.Fetch(ctx, 100)
		if err != nil || len(ds) != 80 {
			t.Fatalf("Fetch(%s) = %d, %v; want 80", sink, len(ds), err)
		}
		ss := make([]pipeline.Settlement, len(ds))
		for i, d := range ds {
			ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
		}
		if err := q.Settle(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := l.Prune(time.Now().Add(time.Hour)); err != nil || n != 80 {
		t.Fatalf("Prune = %d, %v; want 80", n, err)
	}
	for _, p := range [][]byte{preEvent, preIndex, preTime} {
		if n := countKeys(t, l, p); n != 0 {
			t.Errorf("%d %s keys after every event was removed, want 0", n, p)
		}
	}
	if _, err := l.Event(ctx, testID("v7new", 3)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Event of a removed event = %v, want ErrNotFound", err)
	}
}
