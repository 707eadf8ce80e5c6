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
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// TestRequeueSkipsAnEntryJustAppended: an event whose Append has
// committed is queued (its record routes it to the sink and it has no
// delivery record), even in the moment before the queue takes it in
// memory: a Requeue then skips it, as it skips any queued entry, so the
// queue never holds two entries for the event.
func TestRequeueSkipsAnEntryJustAppended(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	var requeued int
	var rerr error
	appendHook = func() {
		appendHook = nil
		requeued, rerr = l.Queue("s").Requeue(ctx, []pipeline.Requeue{{Seq: 1, Route: "again"}})
	}
	t.Cleanup(func() { appendHook = nil })
	if _, err := l.Append(ctx, []pipeline.Entry{{
		Event:   pipeline.Event{ID: "e1", Source: "src", ReceivedAt: time.Now()},
		Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
	}}); err != nil {
		t.Fatal(err)
	}
	if rerr != nil || requeued != 0 {
		t.Errorf("Requeue of the entry just appended = %d, %v; want 0: it is queued", requeued, rerr)
	}
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ds, err := l.Queue("s").Fetch(fctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Seq != 1 || ds[0].Route != "r" {
		t.Fatalf("Fetch = %+v; want the one entry of seq 1, route r", ds)
	}
	if err := l.Queue("s").Settle(ctx, []pipeline.Settlement{{Seq: 1, Outcome: pipeline.Ack}}); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Queue("s").Stats(ctx); err != nil || st != (pipeline.QueueStats{}) {
		t.Fatalf("Stats after the ack = %+v, %v; want an empty queue", st, err)
	}
}

// countRequeue makes requeueHook add the keys each Requeue reads to *n
// until the test ends.
func countRequeue(t *testing.T, n *int) {
	requeueHook = func(looked int) { *n += looked }
	t.Cleanup(func() { requeueHook = nil })
}

// retryKeysOf returns the due times of the retry keys of seq in sink,
// by a walk of them all.
func retryKeysOf(t *testing.T, l *DB, sink string, seq uint64) []uint64 {
	t.Helper()
	prefix := sinkPrefix(preRetry, sink)
	var dues []uint64
	err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			rest := it.Item().Key()[len(prefix):]
			if len(rest) == 16 && binary.BigEndian.Uint64(rest[8:]) == seq {
				dues = append(dues, binary.BigEndian.Uint64(rest))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dues
}

// TestRequeueIsBoundedByTheSeqsAsked: with 100,000 other retries of the
// sink (a day-long outage's), a Requeue page of 10 seqs (4 waiting for a
// retry behind them, 3 delivered, 3 dead letters, one asked twice) reads
// a few keys per seq asked, not every retry key of the sink while the
// sink's Fetch and Settle wait on q.mu (it read 100,011 before); and it
// answers as before: the delivered ones queued, the dead ones said dead.
func TestRequeueIsBoundedByTheSeqsAsked(t *testing.T) {
	if testing.Short() {
		t.Skip("appends and retries 100,000 events")
	}
	ctx := context.Background()
	const others = 100_000
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	retryMany(t, l, "other", others, nil, time.Now().Add(time.Hour))
	later := time.Now().Add(2 * time.Hour)
	seqs := retryMany(t, l, "late", 4, nil, later)
	q := l.Queue("a").(*queue)
	var delivered, dead []uint64
	for i := range 6 {
		if _, err := l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: fmt.Sprint("settled", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r"}}}}); err != nil {
			t.Fatal(err)
		}
		ds, err := q.Fetch(ctx, 2)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Fetch = %v, %v; want the entry just appended", ds, err)
		}
		s := pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Ack}
		if i%2 == 1 {
			s = pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Dead, Err: "400"}
			dead = append(dead, s.Seq)
		} else {
			delivered = append(delivered, s.Seq)
		}
		if err := q.Settle(ctx, []pipeline.Settlement{s}); err != nil {
			t.Fatal(err)
		}
	}
	if at, err := q.NextRetry(ctx, time.Now()); err != nil || !at.Before(later.Add(-time.Minute)) {
		t.Fatalf("NextRetry = %v, %v; want the others' hour (the premise: they sort before the entries asked)", at, err)
	}
	asked := slices.Concat(seqs, delivered, dead)
	var rs []pipeline.Requeue
	for _, seq := range append(asked, seqs[2]) { // one asked twice
		rs = append(rs, pipeline.Requeue{Seq: seq, Route: "again"})
	}
	looked := 0
	countRequeue(t, &looked)
	n, err := q.Requeue(ctx, rs)
	if err != nil || n != len(delivered) {
		t.Fatalf("Requeue(%d seqs behind %d retries) = %d, %v; want %d (the delivered ones), nil", len(asked), others, n, err, len(delivered))
	}
	t.Logf("Requeue of %d seqs behind %d retries read %d keys", len(rs), others, looked)
	if want := 3 * len(rs); looked > want {
		t.Errorf("Requeue of %d seqs read %d keys with %d other retries waiting; want at most %d (an event, a record and a dead-letter key each)", len(rs), looked, others, want)
	}
	for _, r := range rs {
		if r.Dead != slices.Contains(dead, r.Seq) {
			t.Errorf("Requeue said of %d dead %v", r.Seq, r.Dead)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ds, err := q.Fetch(fctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, d := range ds {
		got = append(got, d.Seq)
		if d.Route != "again" || d.Attempt != 1 {
			t.Errorf("entry %d requeued: route %q, attempt %d; want again, 1", d.Seq, d.Route, d.Attempt)
		}
	}
	if !slices.Equal(got, delivered) {
		t.Errorf("Fetch after Requeue = %v; want the delivered ones %v", got, delivered)
	}
}

// TestRequeueSkipsWhatWaitsAtARetryKey: Requeue tells by an entry's
// delivery record whether it waits at a retry key, which holds because
// every writer of a retry key writes or keeps a queued or retrying record
// with it. An entry goes through each writer (a retry, attempted or not,
// due later, now or at the zero time; hold; Release and SettleRelease of
// a held entry, ready or retried; RetryDead; Requeue; Hasten and a
// retry-now walk; and some of these after others), each in a sink of its
// own, so that its key is there, due now, later or held, when Requeue is
// asked for it, before and after a restart: Requeue skips it and the
// entry keeps its one retry key. An entry that waits at no retry key
// (delivered at the first attempt or after a retry, dropped, routed to
// another sink) is queued, a dead letter (settled dead or given up on)
// said dead.
func TestRequeueSkipsWhatWaitsAtARetryKey(t *testing.T) {
	type step func(t *testing.T, q *queue, seq uint64)
	settle := func(s pipeline.Settlement) step {
		return func(t *testing.T, q *queue, seq uint64) {
			t.Helper()
			s.Seq = seq
			if s.Outcome != pipeline.Ack && s.Err == "" {
				s.Err = "503"
			}
			if err := q.Settle(context.Background(), []pipeline.Settlement{s}); err != nil {
				t.Fatalf("Settle(%+v) = %v", s, err)
			}
		}
	}
	later := func() time.Time { return time.Now().Add(time.Hour) }
	retryLater := func(t *testing.T, q *queue, seq uint64) {
		settle(pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: later()})(t, q, seq)
	}
	retryNow := func(t *testing.T, q *queue, seq uint64) {
		settle(pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now()})(t, q, seq)
	}
	fetch := func(t *testing.T, q *queue, seq uint64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ds, err := q.Fetch(ctx, 2)
		if err != nil || len(ds) != 1 || ds[0].Seq != seq {
			t.Fatalf("Fetch = %v, %v; want the entry %d alone", ds, err, seq)
		}
	}
	one := func(name string, m func(context.Context, []uint64) (int, error)) step {
		return func(t *testing.T, q *queue, seq uint64) {
			t.Helper()
			if n, err := m(context.Background(), []uint64{seq}); err != nil || n != 1 {
				t.Fatalf("%s(%d) = %d, %v; want 1", name, seq, n, err)
			}
		}
	}
	hold := settle(pipeline.Settlement{Outcome: pipeline.Hold})
	release := func(t *testing.T, q *queue, seq uint64) { one("Release", q.Release)(t, q, seq) }
	retryDead := func(t *testing.T, q *queue, seq uint64) { one("RetryDead", q.RetryDead)(t, q, seq) }
	hasten := func(t *testing.T, q *queue, seq uint64) { one("Hasten", q.Hasten)(t, q, seq) }
	dropDead := func(t *testing.T, q *queue, seq uint64) { one("DropDead", q.DropDead)(t, q, seq) }
	requeue := func(t *testing.T, q *queue, seq uint64) {
		t.Helper()
		if n, err := q.Requeue(context.Background(), []pipeline.Requeue{{Seq: seq, Route: "r"}}); err != nil || n != 1 {
			t.Fatalf("Requeue(%d) = %d, %v; want 1", seq, n, err)
		}
	}
	retryNowWalk := func(t *testing.T, q *queue, seq uint64) {
		t.Helper()
		var w pipeline.RetryWalk
		if n, err := q.HastenRetries(context.Background(), &w, 10); err != nil || n != 1 {
			t.Fatalf("HastenRetries = %d, %v; want 1", n, err)
		}
	}
	settleRelease := func(t *testing.T, q *queue, seq uint64) {
		t.Helper()
		// Another entry of the sink, fetched and acked, releases seq in
		// the same transaction.
		ctx := context.Background()
		if _, err := q.l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: fmt.Sprint("blocker", seq), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: q.sink, Route: "r"}}}}); err != nil {
			t.Fatal(err)
		}
		ds, err := q.Fetch(ctx, 2)
		if err != nil || len(ds) != 1 || ds[0].Seq == seq {
			t.Fatalf("Fetch = %v, %v; want the blocker alone", ds, err)
		}
		if err := q.SettleRelease(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Ack}}, []uint64{seq}); err != nil {
			t.Fatal(err)
		}
	}
	abandon := func(t *testing.T, q *queue, seq uint64) {
		t.Helper()
		if n, err := q.Abandon(context.Background(), 10, func(string) string { return "given up" }); err != nil || n != 1 {
			t.Fatalf("Abandon = %d, %v; want 1", n, err)
		}
	}
	dead := settle(pipeline.Settlement{Outcome: pipeline.Dead, Err: "400"})
	ack := settle(pipeline.Settlement{Outcome: pipeline.Ack})

	const (
		waitsNow   = "waits, due now"
		waitsLater = "waits, due later"
		waitsHeld  = "waits, held"
		queued     = "queued again"
		isDead     = "dead"
	)
	cases := []struct {
		name  string
		sink  string // "": the case's own; else routed there, requeued to the case's
		steps []step // after the entry is fetched
		want  string
	}{
		{"retry later", "", []step{retryLater}, waitsLater},
		{"retry now", "", []step{retryNow}, waitsNow},
		{"retry at the zero time", "", []step{settle(pipeline.Settlement{Outcome: pipeline.Retry})}, waitsNow},
		{"not attempted, later", "", []step{settle(pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: later(), NotAttempted: true})}, waitsLater},
		{"not attempted, now", "", []step{settle(pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now(), NotAttempted: true})}, waitsNow},
		{"held ready", "", []step{hold}, waitsHeld},
		{"held retry", "", []step{retryNow, fetch, hold}, waitsHeld},
		{"released ready", "", []step{hold, release}, waitsNow},
		{"released retry", "", []step{retryNow, fetch, hold, release}, waitsNow},
		{"released by a settlement", "", []step{hold, settleRelease}, waitsNow},
		{"released, retried later", "", []step{hold, release, fetch, retryLater}, waitsLater},
		{"dead letter retried", "", []step{dead, retryDead}, waitsNow},
		{"dead letter retried, retried later", "", []step{dead, retryDead, fetch, retryLater}, waitsLater},
		{"requeued", "", []step{ack, requeue}, waitsNow},
		{"requeued, retried later", "", []step{ack, requeue, fetch, retryLater}, waitsLater},
		{"requeued, held", "", []step{ack, requeue, fetch, hold}, waitsHeld},
		{"requeued, held, released", "", []step{ack, requeue, fetch, hold, release}, waitsNow},
		{"hastened", "", []step{retryLater, hasten}, waitsNow},
		{"hastened, retried later", "", []step{retryLater, hasten, fetch, retryLater}, waitsLater},
		{"made due by a retry-now walk", "", []step{retryLater, retryNowWalk}, waitsNow},
		{"not attempted, hastened", "", []step{ack, requeue, fetch, settle(pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: later(), NotAttempted: true}), hasten}, waitsNow},
		{"delivered at once", "", []step{ack}, queued},
		{"delivered after a retry", "", []step{retryNow, fetch, ack}, queued},
		{"dropped", "", []step{dead, dropDead}, queued},
		{"routed to another sink", "other", nil, queued},
		{"dead", "", []step{dead}, isDead},
		{"retried, given up on", "", []step{retryLater, abandon}, isDead},
		{"held, given up on", "", []step{hold, abandon}, isDead},
	}
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprint("restart=", restart), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			l := mustOpen(t, dir, nil)
			defer func() { l.Close() }()
			seqs := make([]uint64, len(cases))
			for i, c := range cases {
				sink := fmt.Sprint("s", i)
				if c.sink != "" {
					sink = c.sink
				}
				id := fmt.Sprint("e", i)
				if _, err := l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
					Targets: []pipeline.Target{{Sink: sink, Route: "r"}}}}); err != nil {
					t.Fatal(err)
				}
				es, _, err := l.Events(ctx, pipeline.EventFilter{ID: id})
				if err != nil || len(es) != 1 {
					t.Fatalf("Events(%s) = %v, %v", id, es, err)
				}
				seqs[i] = es[0].Seq
				if c.sink != "" {
					continue
				}
				q := l.Queue(sink).(*queue)
				fetch(t, q, seqs[i])
				for _, s := range c.steps {
					s(t, q, seqs[i])
				}
			}
			if restart {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l = mustOpen(t, dir, nil)
			}
			for i, c := range cases {
				sink := fmt.Sprint("s", i)
				// The premise: the retry keys of the entry as the writer left them.
				dues := retryKeysOf(t, l, sink, seqs[i])
				now := uint64(time.Now().UnixNano())
				var was string
				switch {
				case len(dues) == 0 && c.want == isDead:
					was = isDead
				case len(dues) == 0:
					was = queued
				case len(dues) > 1:
					t.Fatalf("%s: %d retry keys before Requeue", c.name, len(dues))
				case dues[0] == uint64(heldAt.UnixNano()):
					was = waitsHeld
				case dues[0] <= now:
					was = waitsNow
				default:
					was = waitsLater
				}
				if was != c.want {
					t.Fatalf("%s: the entry %s before Requeue; want it %s (the premise)", c.name, was, c.want)
				}
				rs := []pipeline.Requeue{{Seq: seqs[i], Route: "replay"}}
				n, err := l.Queue(sink).Requeue(ctx, rs)
				wantN := 0
				if c.want == queued {
					wantN = 1
				}
				if err != nil || n != wantN || rs[0].Dead != (c.want == isDead) {
					t.Errorf("%s: Requeue = %d (dead %v), %v; want %d (dead %v)", c.name, n, rs[0].Dead, err, wantN, c.want == isDead)
				}
				after := retryKeysOf(t, l, sink, seqs[i])
				switch {
				case c.want == isDead && len(after) != 0:
					t.Errorf("%s: %d retry keys after Requeue of a dead letter; want none", c.name, len(after))
				case c.want != isDead && len(after) != 1:
					t.Errorf("%s: %d retry keys after Requeue; want one", c.name, len(after))
				case c.want != queued && c.want != isDead && after[0] != dues[0]:
					t.Errorf("%s: the retry key moved from %d to %d", c.name, dues[0], after[0])
				}
			}
		})
	}
}

// TestRequeueFindsEntriesOfAnOlderLog: an event with no route and no
// delivery record at the sink may wait at a retry key of a log written
// before delivery records (due later, due now, or held): Requeue finds a
// held one by a point lookup and the others by a walk of the retry keys,
// and skips them; an event routed nowhere that waits at none is queued.
// When more than requeueLook versions of keys come before such an entry,
// Requeue stops there and queues it again, as its doc says (a second
// entry: delivered twice).
func TestRequeueFindsEntriesOfAnOlderLog(t *testing.T) {
	defer func(n int) { requeueLook = n }(requeueLook)
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	q := l.Queue("a").(*queue)
	retryMany(t, l, "other", 500, nil, time.Now().Add(time.Hour))
	var seqs []uint64
	for i := range 4 {
		id := fmt.Sprint("old", i)
		if _, err := l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)}}}); err != nil {
			t.Fatal(err)
		}
		es, _, err := l.Events(ctx, pipeline.EventFilter{ID: id})
		if err != nil || len(es) != 1 {
			t.Fatalf("Events(%s) = %v, %v", id, es, err)
		}
		seqs = append(seqs, es[0].Seq)
	}
	// old0 waits two hours ahead, old1 is due, old2 is held, as an older
	// build left them: a retry key and no delivery record; old3 waits at none.
	txn := l.newTxn()
	v, err := targetUTF8.encoded((&logpb.Target{Route: "r", Attempts: 1, LastError: "503"}).MarshalVT())
	if err != nil {
		t.Fatal(err)
	}
	for i, due := range []time.Time{time.Now().Add(2 * time.Hour), time.Now().Add(-time.Minute), heldAt} {
		if err := txn.Set(retryKey("a", due, seqs[i]), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.commit(txn); err != nil {
		t.Fatal(err)
	}
	txn.Discard()

	looked := 0
	countRequeue(t, &looked)
	rs := func(seqs []uint64) []pipeline.Requeue {
		var rs []pipeline.Requeue
		for _, seq := range seqs {
			rs = append(rs, pipeline.Requeue{Seq: seq, Route: "replay"})
		}
		return rs
	}
	if n, err := q.Requeue(ctx, rs(seqs)); err != nil || n != 1 {
		t.Fatalf("Requeue(3 entries of an older log and an event routed nowhere) = %d, %v; want 1 (the last)", n, err)
	}
	t.Logf("Requeue of 4 seqs, 3 of an older log behind 500 retries, read %d keys", looked)
	if want := 4*4 + 500 + 2; looked > want {
		t.Errorf("Requeue read %d keys; want at most %d (the events, records, held and dead keys, and the retry keys up to old0's)", looked, want)
	}
	for i, seq := range seqs {
		if dues := retryKeysOf(t, l, "a", seq); len(dues) != 1 {
			t.Errorf("old%d: %d retry keys after Requeue; want one", i, len(dues))
		}
	}

	requeueLook = 100
	looked = 0
	if n, err := q.Requeue(ctx, rs(seqs[:3])); err != nil || n != 1 {
		t.Fatalf("Requeue(entries of an older log) with requeueLook 100 = %d, %v; want 1: old0, behind the 500 others, queued again", n, err)
	}
	if want := 3*4 + 100; looked > want {
		t.Errorf("Requeue with requeueLook 100 read %d keys; want at most %d", looked, want)
	}
	if dues := retryKeysOf(t, l, "a", seqs[0]); len(dues) != 2 {
		t.Errorf("old0: %d retry keys after Requeue; want two (its own, beyond requeueLook, and the new one)", len(dues))
	}
}
