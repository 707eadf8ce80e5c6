package badgerlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// TestStatsSkipsSettledEntriesExactly runs appends, fetches, settlements
// of every outcome, dead-letter retries, holds, releases, replays and restarts in a
// random order, and after each step checks that Stats and Oldest (which
// count the queued entries in memory) say what the log's keys say.
func TestStatsSkipsSettledEntriesExactly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	rng := rand.New(rand.NewPCG(19, 4))
	var leased []uint64
	n := 0
	for step := range 600 {
		q := l.Queue("a").(*queue)
		op := rng.IntN(10)
		switch {
		case op < 3: // append
			var es []pipeline.Entry
			for range 1 + rng.IntN(5) {
				n++
				es = append(es, pipeline.Entry{
					Event:   pipeline.Event{ID: fmt.Sprint("e", n), Source: "s", ReceivedAt: time.Unix(int64(n), 0), Body: []byte(`{}`)},
					Targets: []pipeline.Target{{Sink: "a", Route: "r"}},
				})
			}
			if _, err := l.Append(ctx, es); err != nil {
				t.Fatal(err)
			}
		case op < 6: // fetch, unless nothing is ready (Fetch would wait)
			// With nothing ready Fetch waits out its context, after a
			// scan that moves the cursor past everything appended: now
			// and then, not every time.
			if st, _ := q.Stats(ctx); st.Ready-len(leased) <= 0 && step%7 != 0 {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			ds, err := q.Fetch(fctx, 1+rng.IntN(4))
			cancel()
			if err != nil && fctx.Err() == nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				leased = append(leased, d.Seq)
			}
		case op < 8 && len(leased) > 0: // settle some, in any order
			rng.Shuffle(len(leased), func(i, j int) { leased[i], leased[j] = leased[j], leased[i] })
			k := 1 + rng.IntN(len(leased))
			var ss []pipeline.Settlement
			for _, seq := range leased[:k] {
				s := pipeline.Settlement{Seq: seq, Outcome: []pipeline.Outcome{pipeline.Ack, pipeline.Retry, pipeline.Dead, pipeline.Hold}[rng.IntN(4)], Err: "x"}
				s.RetryAt = time.Now().Add(time.Duration(rng.IntN(3)-1) * time.Hour) // due, or not
				ss = append(ss, s)
			}
			if err := q.Settle(ctx, ss); err != nil {
				t.Fatal(err)
			}
			leased = leased[k:]
		case op == 8: // dead letters back, held ones released
			dls, err := q.DeadLetters(ctx, 0, 3)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, d := range dls {
				seqs = append(seqs, d.Seq)
			}
			if _, err := q.RetryDead(ctx, seqs); err != nil {
				t.Fatal(err)
			}
			if _, err := q.releaseAll(ctx); err != nil {
				t.Fatal(err)
			}
			if n > 0 { // a replay of an event appended earlier
				if _, err := q.Requeue(ctx, []pipeline.Requeue{{Seq: 1 + uint64(rng.IntN(n)), Route: "r"}}); err != nil {
					t.Fatal(err)
				}
			}
		case op == 9 && step%5 == 0: // restart: leases and cursor are gone
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if l, err = Open(dir, nil); err != nil {
				t.Fatal(err)
			}
			leased = nil
		}
		q = l.Queue("a").(*queue)
		got, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		gotOldest, err := q.Oldest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, wantOldest := statsByEveryKey(t, q)
		if got != want || !gotOldest.Equal(wantOldest) {
			t.Fatalf("step %d (op %d): Stats = %+v, Oldest = %v; counting every key: %+v, %v", step, op, got, gotOldest, want, wantOldest)
		}
	}
	if st, _ := l.Queue("a").Stats(ctx); st.Ready == 0 || st.Retrying == 0 {
		t.Fatalf("the test never had ready and retrying entries at its end (%+v): its premise is wrong", st)
	}
}

// statsByEveryKey is what the log's keys say of the queue: an event with
// a route to the sink and no delivery record for it is queued (as Open
// rebuilds the queues: pending.go), as is one at a ready key; every
// retry and dead key is counted; the oldest is the lowest seq queued or
// retrying.
func statsByEveryKey(t testing.TB, q *queue) (pipeline.QueueStats, time.Time) {
	t.Helper()
	var st pipeline.QueueStats
	var at time.Time
	err := q.l.db.View(func(txn *badger.Txn) error {
		st.Retrying = countFrom(txn, q.retry, q.retry)
		st.Dead = countFrom(txn, q.dead, q.dead)
		oldest := uint64(0)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: preEvent, PrefetchValues: true})
		for it.Seek(preEvent); it.ValidForPrefix(preEvent); it.Next() {
			seq := binary.BigEndian.Uint64(it.Item().Key()[len(preEvent):])
			rec := &logpb.Event{}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, rec) }); err != nil {
				it.Close()
				return err
			}
			for _, r := range rec.GetRoutes() {
				if r.GetSink() != q.sink {
					continue
				}
				if has, err := exists(txn, deliveryKey(seq, q.sink)); err != nil || has {
					continue
				}
				if _, acked, err := ackedAt(txn, seq, q.sink); err != nil || acked {
					continue
				}
				st.Ready++
				if oldest == 0 {
					oldest = seq
				}
			}
		}
		it.Close()
		st.Ready += countFrom(txn, q.ready, q.ready)
		for _, pre := range [][]byte{q.ready, q.retry} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
			for it.Seek(pre); it.ValidForPrefix(pre); it.Next() {
				k := it.Item().Key()
				if seq := binary.BigEndian.Uint64(k[len(k)-8:]); oldest == 0 || seq < oldest {
					oldest = seq
				}
			}
			it.Close()
		}
		if oldest == 0 {
			return nil
		}
		rec, err := q.l.readEvent(txn, oldest)
		if err != nil {
			return err
		}
		at = time.Unix(0, rec.GetReceivedAtUnixNano()).UTC()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st, at
}

// BenchmarkStats measures Stats and Oldest on a queue that has delivered
// 100,000 events and holds 500 (the deletion markers of the delivered ones
// still in Badger's memtables and tables), against counting every key as
// they did before.
func BenchmarkStats(b *testing.B) {
	ctx := context.Background()
	l, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	q := l.Queue("a").(*queue)
	const delivered, queued = 100_000, 500
	for n := 0; n < delivered+queued; n += 500 {
		var es []pipeline.Entry
		for i := range 500 {
			es = append(es, pipeline.Entry{
				Event:   pipeline.Event{ID: fmt.Sprint("e", n+i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{"a":1}`)},
				Targets: []pipeline.Target{{Sink: "a", Route: "r"}},
			})
		}
		if _, err := l.Append(ctx, es); err != nil {
			b.Fatal(err)
		}
		if n >= delivered {
			continue
		}
		ds, err := q.Fetch(ctx, 500)
		if err != nil {
			b.Fatal(err)
		}
		ss := make([]pipeline.Settlement, len(ds))
		for i, d := range ds {
			ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
		}
		if err := q.Settle(ctx, ss); err != nil {
			b.Fatal(err)
		}
	}
	if st, _ := q.Stats(ctx); st.Ready != queued {
		b.Fatalf("Stats = %+v, want %d ready: the benchmark's premise is wrong", st, queued)
	}
	b.Run("in memory", func(b *testing.B) {
		for b.Loop() {
			if _, err := q.Stats(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := q.Oldest(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("every key", func(b *testing.B) {
		for b.Loop() {
			statsByEveryKey(b, q)
		}
	})
}

// TestStatsAndOldestLeaveTheQueueFree: Stats and Oldest walk every retry
// and dead key (millions after a long outage) without holding the queue's
// mutex, which the sink's Fetch and Settle take; and they count as they
// did while it was held.
func TestStatsAndOldestLeaveTheQueueFree(t *testing.T) {
	ctx := context.Background()
	l, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var es []pipeline.Entry
	for i := range 6 {
		tg := pipeline.Target{Sink: "a", Route: "r"}
		if i%3 == 0 {
			tg.Err = "refused" // a dead letter
		}
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Unix(int64(i+1), 0)},
			Targets: []pipeline.Target{tg}})
	}
	if _, err := l.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("a").(*queue)
	ds, err := q.Fetch(ctx, 2)
	if err != nil || len(ds) != 2 {
		t.Fatalf("Fetch = %d deliveries, %v; want 2", len(ds), err)
	}
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "x"}}); err != nil {
		t.Fatal(err)
	}
	walks, held := 0, 0
	walkHook = func() {
		walks++
		if !q.mu.TryLock() {
			held++
			return
		}
		q.mu.Unlock()
	}
	t.Cleanup(func() { walkHook = nil })
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldest, err := q.Oldest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if walks == 0 || held > 0 {
		t.Errorf("Stats and Oldest walked keys %d times, %d of them holding the queue's mutex; want none", walks, held)
	}
	want, wantOldest := statsByEveryKey(t, q)
	if st != want || !oldest.Equal(wantOldest) {
		t.Errorf("Stats = %+v, Oldest = %v; counting every key: %+v, %v", st, oldest, want, wantOldest)
	}
}
