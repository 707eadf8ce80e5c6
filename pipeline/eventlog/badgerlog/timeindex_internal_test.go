package badgerlog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
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

// TestFingerprintIsStable: runs on disk keep each id's fingerprint, so a
// lookup finds only what the fingerprint of the day it was written says: a
// change of it would hide every event appended before. These values were
// written by the first version (FNV-1a's 32 bits folded to a byte by XOR).
func TestFingerprintIsStable(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want byte
	}{
		{"", 0xc5},
		{"x", 0x26},
		{"ev-000000042", 0x9d},
		{"019ae3f0-0000-7000-8000-000000000000", 0xac},
		{"01a24ab3-e933-7daa-b38a-e44b74b8a6a5", 0xdb},
	} {
		if got := fingerprint(tc.id); got != tc.want {
			t.Errorf("fingerprint(%q) = %#x, want %#x", tc.id, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { fingerprint("01a24ab3-e933-7daa-b38a-e44b74b8a6a5") }); n != 0 {
		t.Errorf("fingerprint allocates %v times per call; it runs for every event appended", n)
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

	ackEvery(t, l, "s")
	ackEvery(t, l, "t")
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

// v7 makes a canonical UUIDv7 of the milliseconds ms, with seq and rnd in
// its other bits.
func v7(ms uint64, seq uint16, rnd uint64) string {
	return fmt.Sprintf("%08x-%04x-7%03x-8%03x-%012x", ms>>16, ms&0xffff, seq&0xfff, rnd&0xfff, rnd>>12&0xffffffffffff)
}

// appendIDs appends one Append of events with ids, routed to sinks.
func appendIDs(t *testing.T, l *DB, ids []string, sinks ...string) {
	t.Helper()
	var es []pipeline.Entry
	for _, id := range ids {
		var ts []pipeline.Target
		for _, s := range sinks {
			ts = append(ts, pipeline.Target{Sink: s, Route: "r"})
		}
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)}, Targets: ts})
	}
	if _, err := l.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
}

func wantFound(t *testing.T, l *DB, id string, want bool) {
	t.Helper()
	ev, err := l.Event(context.Background(), id)
	switch {
	case want && (err != nil || ev.ID != id):
		t.Fatalf("Event(%s) = %q, %v; want it", id, ev.ID, err)
	case !want && !errors.Is(err, pipeline.ErrNotFound):
		t.Fatalf("Event(%s) = %q, %v; want ErrNotFound", id, ev.ID, err)
	}
}

// ackEvery acks every entry queued at sink.
func ackEvery(t *testing.T, l *DB, sink string) {
	t.Helper()
	q := l.Queue(sink)
	ds, err := q.Fetch(context.Background(), 10000)
	if err != nil {
		t.Fatal(err)
	}
	settleAll(t, q, ds, pipeline.Ack)
}

// TestTimeIndexRandom: ids of a few buckets around a bucket edge,
// shuffled, one in ten no UUIDv7, over Appends of 1 to 40; half of them
// removed by retention (holes in runs), a restart, then the rest. Every
// kept event is found, no removed one, and no key is left at the end.
func TestTimeIndexRandom(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, seed))
			dir := t.TempDir()
			l := mustOpen(t, dir, nil)
			base := uint64(1_780_000_000_000) &^ (1<<bucketBits - 1) // a bucket edge
			var ids []string
			for i := range 600 {
				if r.IntN(10) == 0 {
					ids = append(ids, fmt.Sprintf("plain-%d", i))
					continue
				}
				ms := base - 3 + uint64(r.IntN(8)) + 128*uint64(r.IntN(3))
				ids = append(ids, v7(ms, uint16(r.IntN(4096)), r.Uint64()))
			}
			r.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			for i := 0; i < len(ids); {
				n := 1 + r.IntN(40)
				appendIDs(t, l, ids[i:min(i+n, len(ids))], "s")
				i += n
			}
			for _, id := range ids {
				wantFound(t, l, id, true)
			}
			ctx := context.Background()
			q := l.Queue("s")
			ds, err := q.Fetch(ctx, 1000)
			if err != nil || len(ds) != len(ids) {
				t.Fatalf("Fetch = %d, %v", len(ds), err)
			}
			acked := map[string]bool{}
			var ss []pipeline.Settlement
			for _, d := range ds {
				if r.IntN(2) == 0 {
					ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack})
					acked[d.Event.ID] = true
				}
			}
			if err := q.Settle(ctx, ss); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Prune(time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				wantFound(t, l, id, !acked[id])
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = mustOpen(t, dir, nil)
			defer l.Close()
			for _, id := range ids {
				wantFound(t, l, id, !acked[id])
			}
			ackEvery(t, l, "s")
			if _, err := l.Prune(time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			for _, p := range [][]byte{preEvent, preIndex, preTime} {
				if n := countKeys(t, l, p); n != 0 {
					t.Errorf("%d %s keys left", n, p)
				}
			}
		})
	}
}

// TestTimeIndexAfterADowngrade: an older binary, run for a while after
// this one (a downgrade), removes events without their runs and appends
// events with i/ keys and no runs. Back on this binary (an upgrade), those
// events are found, and once every event is removed no key is left: the
// orphan runs swept, the i/ keys deleted with their events.
func TestTimeIndexAfterADowngrade(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	var a, b []string
	for j := range 40 { // 200 ms apart: a run each
		a = append(a, v7(1_780_000_000_000+200*uint64(j), 1, uint64(j)))
		b = append(b, v7(1_790_000_000_000+200*uint64(j), 1, uint64(j)))
	}
	appendIDs(t, l, a, "s")
	if n := countKeys(t, l, preTime); n != 40 {
		t.Fatalf("%d runs for 40 events 200 ms apart, want 40", n)
	}
	// The older binary: its retention removes A's events and leaves their
	// runs; it appends B with an i/ key each and no runs.
	txn := l.newTxn()
	for j := range a {
		if err := txn.Delete(eventKey(uint64(j + 1))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.commit(txn); err != nil {
		t.Fatal(err)
	}
	txn.Discard()
	first := l.next
	appendIDs(t, l, b, "s")
	txn = l.newTxn()
	for j, id := range b {
		bucket, _ := idBucket(id)
		if err := txn.Set(indexKey(id), seqBytes(first+uint64(j))); err != nil {
			t.Fatal(err)
		}
		if err := txn.Delete(timeKey(bucket, first+uint64(j))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.commit(txn); err != nil {
		t.Fatal(err)
	}
	txn.Discard()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = mustOpen(t, dir, nil) // the upgrade
	if l.legacyUpto != first+40 {
		t.Fatalf("legacyUpto = %d, want %d: Open did not see the older binary's appends", l.legacyUpto, first+40)
	}
	appendIDs(t, l, []string{uuid.Must(uuid.NewV7()).String()}) // writes m/time-legacy
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, nil)
	defer l.Close()
	if l.legacyUpto != first+40 {
		t.Fatalf("legacyUpto after a restart = %d, want %d", l.legacyUpto, first+40)
	}
	for _, id := range b {
		wantFound(t, l, id, true)
	}
	ackEvery(t, l, "s")
	if n, err := l.Prune(time.Now().Add(time.Hour)); err != nil || n != 41 {
		t.Fatalf("Prune = %d, %v; want 41", n, err)
	}
	for _, p := range [][]byte{preEvent, preIndex, preTime} {
		if n := countKeys(t, l, p); n != 0 {
			t.Errorf("%d %s keys left after every event was removed", n, p)
		}
	}
}

// TestTimeIndexLookupEndsWithItsContext: a lookup through the time index
// gives up when its context ends (the admin API's request ended).
func TestTimeIndexLookupEndsWithItsContext(t *testing.T) {
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	appendN(t, l, "v7ctx", 20, 20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Event(ctx, testID("v7ctx", 3)); !errors.Is(err, context.Canceled) {
		t.Errorf("Event with an ended context = %v, want context.Canceled", err)
	}
}
