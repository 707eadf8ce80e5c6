package badgerlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
)

// A power loss can leave Badger (which runs without SyncWrites) with
// anything from its last checkpoint on, while the write-ahead log has every
// record whose write returned. These tests build that worst case: a copy
// of the directory taken at a checkpoint, plus the write-ahead log's
// segments as they are later, and check that Open ends in the state the
// log was in.

func mustOpen(t *testing.T, dir string, o *Options) *DB {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	return l
}

// appendN appends n events, per at a time, with ids prefix-0000,
// prefix-0001, ... or, for a prefix starting with "v7", UUIDv7s (testID),
// which the time index takes.
func appendN(t *testing.T, l *DB, prefix string, n, per int) {
	t.Helper()
	for i := 0; i < n; i += per {
		var es []pipeline.Entry
		for j := i; j < min(i+per, n); j++ {
			id := testID(prefix, j)
			es = append(es, pipeline.Entry{
				Event: pipeline.Event{
					ID: id, Source: "src", ReceivedAt: time.Now(),
					Headers: map[string]string{"x-n": id}, Body: []byte(`{"id":"` + id + `"}`),
				},
				DedupKey: id, DedupWindow: time.Hour,
				Targets: []pipeline.Target{{Sink: "s", Route: "r"}, {Sink: "t", Route: "r", Payload: []byte(id)}},
			})
		}
		if _, err := l.Append(context.Background(), es); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
}

// testID is the id of appendN's event j: prefix-j, or for a prefix that
// starts with "v7" a UUIDv7 made 13 ms after event j-1's (so ten or so
// share a time-index bucket) with prefix and j in its random bits.
func testID(prefix string, j int) string {
	if !strings.HasPrefix(prefix, "v7") {
		return fmt.Sprintf("%s-%04d", prefix, j)
	}
	ms := uint64(1_780_000_000_000 + 13*j)
	var h uint32
	for _, c := range prefix {
		h = h*31 + uint32(c)
	}
	return fmt.Sprintf("%08x-%04x-7%03x-8%03x-%012x", ms>>16, ms&0xffff, h&0xfff, (h>>12)&0xfff, uint64(j))
}

// settleSome fetches n entries of sink and acks, retries and kills them in turn.
func settleSome(t *testing.T, l *DB, sink string, n int) {
	t.Helper()
	ctx := context.Background()
	q := l.Queue(sink)
	ds, err := q.Fetch(ctx, n)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	var ss []pipeline.Settlement
	for i, d := range ds {
		s := pipeline.Settlement{Seq: d.Seq, Outcome: []pipeline.Outcome{pipeline.Ack, pipeline.Retry, pipeline.Dead}[i%3]}
		switch s.Outcome {
		case pipeline.Retry:
			s.RetryAt, s.Err = time.Now().Add(time.Hour), "busy"
		case pipeline.Dead:
			s.Err = "refused"
		}
		ss = append(ss, s)
	}
	if err := q.Settle(ctx, ss); err != nil {
		t.Fatalf("Settle: %v", err)
	}
}

// queuedSeqs returns the seqs queued (ready or leased) in each of sinks,
// once the queues are rebuilt after Open (nil if that failed).
func queuedSeqs(l *DB, sinks ...string) map[string][]uint64 {
	if l.waitQueues(context.Background()) != nil {
		return nil
	}
	out := map[string][]uint64{}
	for _, s := range sinks {
		q := l.queue(s)
		q.pmu.Lock()
		out[s] = q.pending.below(math.MaxUint64)
		q.pmu.Unlock()
	}
	return out
}

// seqsSummary says what queuedSeqs returned in a line.
func seqsSummary(m map[string][]uint64) string {
	var b strings.Builder
	for _, s := range slices.Sorted(maps.Keys(m)) {
		if seqs := m[s]; len(seqs) > 0 {
			fmt.Fprintf(&b, "%s: %d (%d..%d) ", s, len(seqs), seqs[0], seqs[len(seqs)-1])
		} else {
			fmt.Fprintf(&b, "%s: none ", s)
		}
	}
	return strings.TrimSpace(b.String())
}

// dump returns every key of l's Badger with its value and expiry, but the
// pending mark: a hint for Open that is written every markInterval, not
// state (the queues it bounds are compared by queuedSeqs).
func dump(t *testing.T, l *DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if bytes.Equal(it.Item().Key(), keyPendingMark) {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = fmt.Sprintf("%x@%d", v, it.Item().ExpiresAt())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out
}

// copyFiles copies the regular files of src (those keep says yes to) into dst.
func copyFiles(t *testing.T, src, dst string, keep func(name string) bool) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !keep(e.Name()) {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
}

func all(string) bool { return true }

func segmentsOnly(name string) bool { return strings.HasSuffix(name, ".wal") }

// snapshot copies dir, Badger and write-ahead log, into a new directory.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	snap := t.TempDir()
	copyFiles(t, dir, snap, func(name string) bool { return name != "LOCK" })
	copyFiles(t, filepath.Join(dir, "wal"), filepath.Join(snap, "wal"), all)
	return snap
}

func TestReplayRestoresWhatBadgerLost(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// Small segments: the records after the checkpoint span several, and
	// the checkpoints the full ones start run meanwhile.
	l := mustOpen(t, dir, &Options{SegmentSize: 16 << 10})
	appendN(t, l, "before", 60, 7)
	settleSome(t, l, "s", 30)
	if err := l.checkpoint(); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	lost := snapshot(t, dir) // Badger as of the checkpoint, nothing after

	appendN(t, l, "v7after", 300, 9) // found by the time index
	appendN(t, l, "v7after", 300, 9) // every one a duplicate now
	settleSome(t, l, "s", 100)
	settleSome(t, l, "t", 50)
	if _, err := l.Queue("s").RetryDead(ctx, nil); err != nil {
		t.Fatalf("RetryDead: %v", err)
	}
	settleSome(t, l, "s", 40)
	if _, err := l.Queue("t").Requeue(ctx, []pipeline.Requeue{{Seq: 1, Route: "r"}, {Seq: 2, Route: "r"}}); err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	if _, err := l.Reject(ctx, pipeline.Rejection{Source: "src", ReceivedAt: time.Now(), Keep: time.Hour, Status: 401, Reason: "signature mismatch"}); err != nil {
		t.Fatalf("Reject: %v", err)
	}
	want := dump(t, l)
	wantQueued := queuedSeqs(l, "s", "t")
	if n := len(l.wal.Segments()); n < 3 {
		t.Fatalf("the records after the checkpoint are in %d segments; the test wants several", n)
	}
	// The power goes: the write-ahead log has every record, Badger only
	// what it had at the checkpoint.
	copyFiles(t, filepath.Join(dir, "wal"), filepath.Join(lost, "wal"), segmentsOnly)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	r := mustOpen(t, lost, nil)
	defer r.Close()
	got := dump(t, r)
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			t.Errorf("after replay, key %q = %.60s, want %.60s", k, got[k], want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			t.Errorf("after replay, key %q is there and should not be", k)
		}
	}
	if got := queuedSeqs(r, "s", "t"); !maps.EqualFunc(got, wantQueued, slices.Equal) {
		t.Errorf("after replay, the queues hold %s, want %s", seqsSummary(got), seqsSummary(wantQueued))
	}
	evs, _, err := r.Events(ctx, pipeline.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	if len(evs) != 360 {
		t.Fatalf("Events after replay: %d, want 360", len(evs))
	}
	for _, e := range evs {
		if string(e.Event.Body) != `{"id":"`+e.Event.ID+`"}` || e.Event.Headers["x-n"] != e.Event.ID {
			t.Fatalf("event %s after replay: body %q headers %v", e.Event.ID, e.Event.Body, e.Event.Headers)
		}
		if ev, err := r.Event(ctx, e.Event.ID); err != nil || ev.ID != e.Event.ID {
			t.Fatalf("Event(%s) after replay = %s, %v", e.Event.ID, ev.ID, err)
		}
	}
}

func TestTornTailLosesOnlyTheUnfinishedWrite(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	lost := snapshot(t, dir)  // Open ends with a checkpoint
	appendN(t, l, "a", 20, 1) // one record per event
	copyFiles(t, filepath.Join(dir, "wal"), filepath.Join(lost, "wal"), segmentsOnly)
	l.Close()

	// The last write was cut short: its record has no end.
	segs, _ := filepath.Glob(filepath.Join(lost, "wal", "*.wal"))
	slices.Sort(segs)
	last := segs[len(segs)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()-3); err != nil {
		t.Fatal(err)
	}
	r := mustOpen(t, lost, nil)
	defer r.Close()
	ctx := context.Background()
	evs, _, err := r.Events(ctx, pipeline.EventFilter{Limit: 100})
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	if len(evs) != 19 || evs[len(evs)-1].Event.ID != "a-0018" {
		t.Fatalf("after a torn last record: %d events (last %s), want a-0000 … a-0018", len(evs), evs[len(evs)-1].Event.ID)
	}
	// The log goes on from there: the next append gets the torn one's seq.
	appendN(t, r, "b", 1, 1)
	evs, _, _ = r.Events(ctx, pipeline.EventFilter{ID: "b-0000"})
	if len(evs) != 1 || evs[0].Seq != 20 {
		t.Fatalf("event after the torn one: %+v, want seq 20", evs)
	}
}

// Records written together are applied in one Badger transaction when
// they fit, else in several, in log order: nothing is lost either way.
func TestGroupBiggerThanOneTransaction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// 1 MiB memtables: a transaction holds ~150 KB, so an append of 80 KB
	// and other writes of 40 KB, written together, need several.
	l := mustOpen(t, dir, &Options{MemTableSize: 1 << 20})
	body := []byte(`{"pad":"` + strings.Repeat("x", 8<<10) + `"}`)
	errs := make(chan error, 8)
	go func() { // Append is called from one goroutine at a time
		for i := range 20 {
			var es []pipeline.Entry
			for j := range 10 {
				id := fmt.Sprintf("e%d-%d", i, j)
				es = append(es, pipeline.Entry{
					Event:   pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: body},
					Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
				})
			}
			if _, err := l.Append(ctx, es); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	for g := range 7 { // other writers, with 40 KB values
		go func() {
			for i := range 20 {
				txn := l.newTxn()
				if err := txn.Set([]byte(fmt.Sprintf("z/%d/%d", g, i)), bytes.Repeat(body, 5)); err != nil {
					errs <- err
					return
				}
				if err := l.commit(txn); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	want := dump(t, l)
	lost := t.TempDir() // nothing of Badger: all from the write-ahead log
	copyFiles(t, filepath.Join(dir, "wal"), filepath.Join(lost, "wal"), segmentsOnly)
	l.Close()
	r := mustOpen(t, lost, &Options{MemTableSize: 1 << 20})
	defer r.Close()
	got := dump(t, r)
	events, others := 0, 0
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("after replay, key %q differs", k)
		}
		events += btoi(strings.HasPrefix(k, "e/"))
		others += btoi(strings.HasPrefix(k, "z/"))
	}
	if len(got) != len(want) || events != 200 || others != 140 {
		t.Fatalf("replayed %d keys (want %d): %d events (want 200), %d others (want 140)", len(got), len(want), events, others)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestReplayAfterTheMemtableShrank crashes a log whose last append was one
// transaction of a 64 MiB memtable, too big for one of 16 MiB, and opens
// it again with log.memtable_size lowered to 16 MiB: replay must apply the
// record across several transactions, not refuse to start.
func TestReplayAfterTheMemtableShrank(t *testing.T) {
	ctx := context.Background()
	batch := func() []pipeline.Entry {
		var es []pipeline.Entry
		for j := range 1024 {
			id := fmt.Sprintf("ev-%04d", j)
			var ts []pipeline.Target
			for _, s := range []string{"a", "b", "c"} { // dead letters: their payloads are in Badger
				ts = append(ts, pipeline.Target{Sink: s, Route: "r", Err: "rule failed", Payload: bytes.Repeat([]byte{'x'}, 1000)})
			}
			es = append(es, pipeline.Entry{
				Event:    pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				DedupKey: id, DedupWindow: time.Hour, Targets: ts,
			})
		}
		return es
	}
	small := mustOpen(t, t.TempDir(), &Options{MemTableSize: 16 << 20})
	_, err := small.Append(ctx, batch())
	small.Close()
	if !errors.Is(err, pipeline.ErrTooBig) {
		t.Fatalf("the batch appended at 16 MiB: %v; the test wants one too big for it", err)
	}

	dir := t.TempDir()
	big := mustOpen(t, dir, &Options{MemTableSize: 64 << 20})
	if _, err := big.Append(ctx, batch()); err != nil {
		t.Fatalf("Append at 64 MiB: %v", err)
	}
	want := dump(t, big)
	crashed := snapshot(t, dir) // as kill -9 leaves it: the record not yet checkpointed
	big.Close()

	r, err := Open(crashed, &Options{MemTableSize: 16 << 20})
	if err != nil {
		t.Fatalf("Open after a crash with the memtable lowered to 16 MiB: %v", err)
	}
	defer r.Close()
	if got := dump(t, r); !maps.Equal(got, want) {
		t.Errorf("after replay at 16 MiB: %d keys, want the %d written at 64 MiB", len(got), len(want))
	}
}
