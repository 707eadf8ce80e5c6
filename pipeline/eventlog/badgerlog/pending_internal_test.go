package badgerlog

import (
	"context"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// TestOpenReadsFromThePendingMark: after a power loss, Open rebuilds the
// queues from the event records from the pending mark on, and ends with
// exactly the entries that were queued (leased ones ready again), none of
// those settled, held or dead; and it reads no record below the mark.
func TestOpenReadsFromThePendingMark(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	appendN(t, l, "m", 40, 8) // seqs 1..40, to sinks s and t
	ds, err := l.Queue("s").Fetch(ctx, 20)
	if err != nil || len(ds) != 20 {
		t.Fatalf("Fetch = %d, %v; want 20", len(ds), err)
	}
	var ss []pipeline.Settlement
	for _, d := range ds[:10] { // 1..10 acked; 11..20 stay leased
		ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack})
	}
	if err := l.Queue("s").Settle(ctx, ss); err != nil {
		t.Fatal(err)
	}
	dt, err := l.Queue("t").Fetch(ctx, 40)
	if err != nil || len(dt) != 40 {
		t.Fatalf("Fetch = %d, %v; want 40", len(dt), err)
	}
	ss = nil
	for i, d := range dt { // every one settled: acked, held, retried, dead in turn
		ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: []pipeline.Outcome{pipeline.Ack, pipeline.Hold, pipeline.Retry, pipeline.Dead}[i%4],
			RetryAt: time.Now().Add(time.Hour), Err: "x"})
	}
	if err := l.Queue("t").Settle(ctx, ss); err != nil {
		t.Fatal(err)
	}
	mark, err := l.writeMark(0)
	if err != nil {
		t.Fatal(err)
	}
	if mark != 11 {
		t.Fatalf("pending mark = %d, want 11 (the lowest entry still leased)", mark)
	}
	if err := l.checkpoint(); err != nil {
		t.Fatal(err)
	}
	lost := snapshot(t, dir)
	appendN(t, l, "n", 10, 3) // seqs 41..50, after the checkpoint: replayed
	want := queuedSeqs(l, "s", "t")
	if !slices.Equal(want["s"][:1], []uint64{11}) || len(want["s"]) != 40 || len(want["t"]) != 10 {
		t.Fatalf("queued before the power loss %v: the test's premise is wrong", want)
	}
	copyFiles(t, filepath.Join(dir, "wal"), filepath.Join(lost, "wal"), segmentsOnly)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	var read []uint64
	loadHook = func(seq uint64) { read = append(read, seq) }
	t.Cleanup(func() { loadHook = nil })
	var progress atomic.Int64
	r := mustOpen(t, lost, &Options{Progress: &progress})
	defer r.Close()
	if err := r.waitQueues(ctx); err != nil {
		t.Fatal(err)
	}
	loadHook = nil
	if len(read) == 0 || slices.Min(read) != 11 {
		t.Errorf("Open read the records of seqs %v, want from 11 (the mark) on", read)
	}
	// The records replayed (those appended after the checkpoint), then the
	// events read.
	if got := progress.Load(); got <= int64(len(read)) {
		t.Errorf("Options.Progress = %d, want the %d events read and the records replayed", got, len(read))
	}
	if got := queuedSeqs(r, "s", "t"); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("after the power loss, the queues hold %s, want %s", seqsSummary(got), seqsSummary(want))
	}
	got, err := r.Queue("s").Fetch(ctx, 100)
	if err != nil || len(got) != 40 || got[0].Seq != 11 || got[0].Route != "r" {
		t.Fatalf("Fetch after the power loss = %d entries (first %+v), %v; want 40 from seq 11", len(got), got[:min(1, len(got))], err)
	}
	if tg, err := r.Queue("t").Fetch(ctx, 100); err != nil || len(tg) != 10 || string(tg[0].Payload) != "n-0000" {
		t.Fatalf("Fetch of t after the power loss = %d entries, %v; want the 10 appended after the checkpoint, with their payloads", len(tg), err)
	}
}

// TestMarkNeverPassesAQueuedEntry: whatever the queues went through, the
// pending mark is at or below the lowest queued entry of every sink.
func TestMarkNeverPassesAQueuedEntry(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	written := uint64(0)
	kept := map[string][]uint64{} // leased, settled a round later
	for round := range 30 {
		appendN(t, l, fmt.Sprint("r", round), 7, 3)
		for i, sink := range []string{"s", "t"} {
			ds, err := l.Queue(sink).Fetch(ctx, 3+round%5+i)
			if err != nil {
				t.Fatal(err)
			}
			var ss []pipeline.Settlement
			for _, seq := range kept[sink] {
				ss = append(ss, pipeline.Settlement{Seq: seq, Outcome: []pipeline.Outcome{pipeline.Ack, pipeline.Hold, pipeline.Dead}[round%3], Err: "x"})
			}
			kept[sink] = nil
			for j, d := range ds {
				if (j+round)%3 == 0 { // stays leased a while
					kept[sink] = append(kept[sink], d.Seq)
					continue
				}
				ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack})
			}
			if err := l.Queue(sink).Settle(ctx, ss); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		if written, err = l.writeMark(written); err != nil {
			t.Fatal(err)
		}
		lowest := uint64(math.MaxUint64)
		for _, seqs := range queuedSeqs(l, "s", "t") {
			if len(seqs) > 0 {
				lowest = min(lowest, seqs[0])
			}
		}
		if written > lowest {
			t.Fatalf("round %d: pending mark %d is above the queued entry %d", round, written, lowest)
		}
	}
	if written < 50 {
		t.Fatalf("the mark moved only to %d: the test's premise is wrong", written)
	}
}

// TestReadyKeysOfAnOlderLog: a log written before routes were kept in the
// event records has a ready key per queued entry. Open queues those
// entries (with the route and payload of their keys), settling one
// deletes its key, and retention keeps an event while its key is there.
func TestReadyKeysOfAnOlderLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	appendN(t, l, "old", 4, 4) // seqs 1..4
	// Make it the older form: the records without routes, a ready key each.
	txn := l.newTxn()
	for seq := uint64(1); seq <= 4; seq++ {
		item, err := txn.Get(eventKey(seq))
		if err != nil {
			t.Fatal(err)
		}
		rec := &logpb.Event{}
		if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, rec) }); err != nil {
			t.Fatal(err)
		}
		rec.Routes = nil
		v, err := proto.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Set(eventKey(seq), v); err != nil {
			t.Fatal(err)
		}
		for _, sink := range []string{"s", "t"} {
			tv, _ := proto.Marshal(&logpb.Target{Route: "old-route", Payload: []byte(fmt.Sprint(sink, seq))})
			if err := txn.Set(readyKey(sink, seq), tv); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := txn.Delete(keyPendingMark); err != nil { // an older log has none
		t.Fatal(err)
	}
	if err := l.commit(txn); err != nil {
		t.Fatal(err)
	}
	// Stopped without Close (which would write the mark): the older log.
	if err := l.checkpoint(); err != nil {
		t.Fatal(err)
	}
	older := snapshot(t, dir)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	dir = older

	l = mustOpen(t, dir, nil)
	defer func() { l.Close() }()
	q := l.Queue("s")
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ds, err := q.Fetch(fctx, 10)
	if err != nil || len(ds) != 4 {
		t.Fatalf("Fetch = %d, %v; want the 4 entries of the ready keys", len(ds), err)
	}
	if ds[0].Route != "old-route" || string(ds[0].Payload) != "s1" || ds[0].Event.ID != "old-0000" {
		t.Fatalf("Fetch = %+v, want route, payload and event of the ready key", ds[0])
	}
	recs, err := l.Deliveries(ctx, "old-0002")
	if err != nil || len(recs) != 2 || recs[0].State != pipeline.StateQueued || recs[1].State != pipeline.StateQueued {
		t.Fatalf("Deliveries = %+v, %v; want queued at s and t", recs, err)
	}
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Ack}, {Seq: ds[1].Seq, Outcome: pipeline.Dead, Err: "x"}}); err != nil {
		t.Fatal(err)
	}
	if has, err := l.has(readyKey("s", ds[0].Seq)); err != nil || has {
		t.Fatalf("the acked entry's ready key is there (%v, %v), want it deleted", has, err)
	}
	// Retention: seq 1 is still queued at t (its ready key), so kept.
	if n, err := l.Prune(time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("Prune = %d, %v; want 0: every event is still queued somewhere", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, nil)
	if st, err := l.Queue("s").Stats(ctx); err != nil || st.Ready != 2 || st.Dead != 1 {
		t.Fatalf("Stats of s after a restart = %+v, %v; want 2 ready and 1 dead", st, err)
	}
	if st, err := l.Queue("t").Stats(ctx); err != nil || st.Ready != 4 {
		t.Fatalf("Stats of t after a restart = %+v, %v; want 4 ready", st, err)
	}
}

// has reports whether key is in the log.
func (l *DB) has(key []byte) (bool, error) {
	var found bool
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		found, err = exists(txn, key)
		return err
	})
	return found, err
}

// BenchmarkOpenWithBacklog measures Open on a log whose two sinks have
// 100,000 events queued (a sink down for a while): Open rebuilds both
// queues from the event records. It reports the heap the queues hold.
func BenchmarkOpenWithBacklog(b *testing.B) {
	const backlog = 100_000
	dir := b.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for n := 0; n < backlog; n += 500 {
		var es []pipeline.Entry
		for i := range 500 {
			es = append(es, pipeline.Entry{
				Event:   pipeline.Event{ID: fmt.Sprint("e", n+i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{"a":1}`)},
				Targets: []pipeline.Target{{Sink: "a", Route: "r"}, {Sink: "b", Route: "r"}},
			})
		}
		if _, err := l.Append(ctx, es); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		l, err := Open(dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.waitQueues(ctx); err != nil { // Open rebuilds the queues in the background
			b.Fatal(err)
		}
		b.StopTimer()
		st, err := l.Queue("a").Stats(ctx)
		if err != nil || st.Ready != backlog {
			b.Fatalf("Stats = %+v, %v; want %d ready", st, err, backlog)
		}
		var queued int
		for _, s := range []string{"a", "b"} {
			q := l.queue(s)
			q.pmu.Lock()
			queued += cap(q.pending.seqs)
			q.pmu.Unlock()
		}
		b.ReportMetric(float64(queued*8)/backlog/2, "queue-B/entry")
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestPendingForgetsWhatIsSettledBehindALease: an entry leased and never
// settled (a batch a dispatcher gave up at its stop deadline stays leased
// until a restart) does not make the queue keep every entry settled after
// it: its memory stays bounded by what is queued (P9), and it still says
// exactly what is.
func TestPendingForgetsWhatIsSettledBehindALease(t *testing.T) {
	var p pending
	p.add(1)
	if got := p.take(1); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("take = %v, want [1]", got)
	}
	for seq := uint64(2); seq <= 100_001; seq++ {
		p.add(seq)
		if got := p.take(5); !slices.Equal(got, []uint64{seq}) {
			t.Fatalf("take = %v, want [%d]", got, seq)
		}
		p.settle(seq)
	}
	if len(p.seqs) > 1000 || len(p.settled) > 1000 {
		t.Fatalf("with one entry queued, the queue keeps %d seqs and %d settled ones", len(p.seqs), len(p.settled))
	}
	if low, ok := p.lowest(); !ok || low != 1 || p.len() != 1 || !p.has(1) || p.has(2) || p.has(100_001) {
		t.Fatalf("lowest = %d, %v; len = %d; has(1, 2, 100001) = %v, %v, %v; want seq 1 alone queued",
			low, ok, p.len(), p.has(1), p.has(2), p.has(100_001))
	}
	p.add(100_002, 100_003)
	if got := p.take(5); !slices.Equal(got, []uint64{100_002, 100_003}) {
		t.Fatalf("take = %v, want the two new entries", got)
	}
	p.untake(2)
	p.settle(1)
	if got := p.below(math.MaxUint64); !slices.Equal(got, []uint64{100_002, 100_003}) || p.len() != 2 {
		t.Fatalf("queued = %v (len %d), want the two new entries", got, p.len())
	}
	if got := p.take(5); !slices.Equal(got, []uint64{100_002, 100_003}) {
		t.Fatalf("take after untake = %v, want the two new entries", got)
	}
}
