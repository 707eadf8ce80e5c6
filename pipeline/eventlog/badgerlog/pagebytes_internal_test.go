package badgerlog

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// TestAbandonPagesAreBoundedInBytes: a page of Abandon ends once its
// targets' payloads reach abandonBytes, whether they wait for a retry or
// are ready, leaving the rest waiting for the next page; pages go on until
// one moves nothing, and every entry ends up a dead letter with its
// payload.
func TestAbandonPagesAreBoundedInBytes(t *testing.T) {
	defer func(b int) { abandonBytes = b }(abandonBytes)
	abandonBytes = 250
	ctx := context.Background()
	l, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	payload := `"` + strings.Repeat("p", 98) + `"` // 100 bytes
	var es []pipeline.Entry
	for i := range 7 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r", Payload: []byte(payload)}}})
	}
	if _, err := l.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("a")
	// Two of them wait for a retry an hour away.
	ds, err := q.Fetch(ctx, 2)
	if err != nil || len(ds) != 2 {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	var retry []pipeline.Settlement
	for _, d := range ds {
		retry = append(retry, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, Err: "503", RetryAt: time.Now().Add(time.Hour)})
	}
	if err := q.Settle(ctx, retry); err != nil {
		t.Fatal(err)
	}
	var pages []int
	for range 10 {
		n, err := q.(pipeline.Abandoner).Abandon(ctx, 1000, func(string) string { return "given up" })
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, n)
		if n == 0 {
			break
		}
	}
	// 100 bytes each (and the retries' 3-byte error): a page ends at the
	// third entry, 300 bytes or so, over the bound of 250.
	if want := []int{3, 3, 1, 0}; fmt.Sprint(pages) != fmt.Sprint(want) {
		t.Errorf("Abandon pages moved %v, want %v", pages, want)
	}
	st, err := q.Stats(ctx)
	if err != nil || st != (pipeline.QueueStats{Dead: 7}) {
		t.Errorf("Stats after the pages = %+v, %v; want 7 dead, nothing waiting", st, err)
	}
	dls, err := q.DeadLetters(ctx, 0, 100)
	if err != nil || len(dls) != 7 {
		t.Fatalf("DeadLetters = %d, %v; want 7", len(dls), err)
	}
	for _, d := range dls {
		if string(d.Payload) != payload {
			t.Errorf("dead letter %d has payload %q, want the target's", d.Seq, d.Payload)
		}
	}
}

// TestDeadLetterTransactionsAreBoundedInBytes: a retry or drop of dead
// letters goes to the next transaction once the targets of one hold
// deadBytes of payloads, whether it names the dead letters or takes them
// all, and still acts on every one.
func TestDeadLetterTransactionsAreBoundedInBytes(t *testing.T) {
	defer func(b int) { deadBytes = b }(deadBytes)
	deadBytes = 250
	ctx := context.Background()
	payload := `"` + strings.Repeat("p", 98) + `"` // 100 bytes
	for _, named := range []bool{false, true} {
		l, err := Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var es []pipeline.Entry
		for i := range 7 {
			es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "a", Route: "r", Payload: []byte(payload), Err: "transform: x"}}})
		}
		if _, err := l.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		if named {
			dls, err := l.Queue("a").DeadLetters(ctx, 0, 100)
			if err != nil || len(dls) != 7 {
				t.Fatalf("DeadLetters = %d, %v; want 7", len(dls), err)
			}
			for _, d := range dls {
				seqs = append(seqs, d.Seq)
			}
		}
		txns := map[*wtxn]int{}
		n, err := l.queue("a").eachDead(ctx, seqs, func(txn *wtxn, _ uint64, _ *logpb.Target) error {
			txns[txn]++
			return nil
		})
		if err != nil || n != 7 {
			t.Fatalf("eachDead(named %v) = %d, %v; want all 7", named, n, err)
		}
		// About 112 bytes each (payload and error): a transaction is full
		// at its third, so 3, 3 and 1.
		var sizes []int
		for _, c := range txns {
			sizes = append(sizes, c)
		}
		slices.Sort(sizes)
		if fmt.Sprint(sizes) != "[1 3 3]" {
			t.Errorf("eachDead(named %v) acted in transactions of %v dead letters, want [1 3 3]", named, sizes)
		}
	}
}

// TestPagesFitBadgersTransaction: with the default memtable a Badger
// transaction takes 2.4 MiB, and a payload under the value threshold
// (1 MiB) counts whole, so three transform outputs of 900 KiB do not fit
// in one, long before abandonBytes or deadBytes: Abandon (dlq add --all)
// and RetryDead (dlq retry, named or all) failed with "Txn is too big" on
// every call, the same page each time, and could never move such a queue.
// They now end the transaction at the entries that fit.
func TestPagesFitBadgersTransaction(t *testing.T) {
	ctx := context.Background()
	l, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	payload := []byte(`"` + strings.Repeat("p", 900<<10) + `"`)
	const n = 6
	for i := range n {
		es := []pipeline.Entry{{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r", Payload: payload}, {Sink: "b", Route: "r", Payload: payload}}}}
		if _, err := l.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
	}
	// Two of a's wait for a retry, the others are ready.
	qa := l.Queue("a")
	ds, err := qa.Fetch(ctx, 2)
	if err != nil || len(ds) != 2 {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	for _, d := range ds {
		if err := qa.Settle(ctx, []pipeline.Settlement{{Seq: d.Seq, Outcome: pipeline.Retry, Err: "503", RetryAt: time.Now().Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
	}
	moved := 0
	for range 2 * n {
		m, err := qa.(pipeline.Abandoner).Abandon(ctx, 1000, func(string) string { return "given up" })
		if err != nil {
			t.Fatalf("Abandon after %d moved: %v", moved, err)
		}
		if m == 0 {
			break
		}
		moved += m
	}
	if st, err := qa.Stats(ctx); err != nil || moved != n || st != (pipeline.QueueStats{Dead: n}) {
		t.Errorf("Abandon moved %d; stats %+v, %v; want all %d dead", moved, st, err, n)
	}
	dls, err := qa.DeadLetters(ctx, 0, 100)
	if err != nil || len(dls) != n {
		t.Fatalf("DeadLetters = %d, %v", len(dls), err)
	}
	for _, d := range dls {
		if string(d.Payload) != string(payload) {
			t.Errorf("dead letter %d lost its payload", d.Seq)
		}
	}

	// b's all dead, one at a time (a Settle splits itself on the limit).
	qb := l.Queue("b")
	ds, err = qb.Fetch(ctx, n)
	if err != nil || len(ds) != n {
		t.Fatalf("Fetch b = %d, %v", len(ds), err)
	}
	var seqs []uint64
	for _, d := range ds {
		seqs = append(seqs, d.Seq)
		if err := qb.Settle(ctx, []pipeline.Settlement{{Seq: d.Seq, Outcome: pipeline.Dead, Err: "boom"}}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := qb.RetryDead(ctx, seqs[:n-1]); err != nil || got != n-1 {
		t.Fatalf("RetryDead(%d named) = %d, %v", n-1, got, err)
	}
	if st, err := qb.Stats(ctx); err != nil || st != (pipeline.QueueStats{Retrying: n - 1, Dead: 1}) {
		t.Errorf("stats after the named retry %+v, %v", st, err)
	}
	// Back to dead, then all of them at once.
	ds, err = qb.Fetch(ctx, n)
	if err != nil || len(ds) != n-1 {
		t.Fatalf("Fetch b again = %d, %v", len(ds), err)
	}
	for _, d := range ds {
		if err := qb.Settle(ctx, []pipeline.Settlement{{Seq: d.Seq, Outcome: pipeline.Dead, Err: "boom"}}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := qb.RetryDead(ctx, nil); err != nil || got != n {
		t.Fatalf("RetryDead(all) = %d, %v; want %d", got, err, n)
	}
	if st, err := qb.Stats(ctx); err != nil || st != (pipeline.QueueStats{Retrying: n}) {
		t.Errorf("stats after retrying all %+v, %v", st, err)
	}
}

// TestDeadLettersReadsAheadNoMoreThanThePage: a page of one dead letter
// reads one payload, not the 64 that the iterator read ahead (each up to
// 1 MiB: GET /v1/sinks/{sink}/dlq?limit=1 took the daemon's memory up by
// 280 MB over such dead letters).
func TestDeadLettersReadsAheadNoMoreThanThePage(t *testing.T) {
	ctx := context.Background()
	l, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	payload := []byte(`"` + strings.Repeat("p", 1000<<10) + `"`) // under the value threshold: in the tree
	for i := range 40 {
		e := pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r", Payload: payload, Err: "transform: x"}}}
		if _, err := l.Append(ctx, []pipeline.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	q := l.Queue("a")
	// The least of five: Badger's own goroutines allocate meanwhile (a
	// memtable's flush), the more so under the race detector.
	least := uint64(1 << 62)
	for range 5 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		dls, err := q.DeadLetters(ctx, 0, 1)
		runtime.ReadMemStats(&after)
		if err != nil || len(dls) != 1 {
			t.Fatalf("DeadLetters(limit 1) = %d, %v", len(dls), err)
		}
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	if least > 8<<20 {
		t.Errorf("DeadLetters(limit 1) allocated %d MiB over dead letters of 1 MiB, want a few", least>>20)
	}
}

// TestOneEntryFitsATransaction: with a memtable under ~7 MiB, Open set
// Badger's value threshold one byte under its bound on a transaction
// (15% of the memtable), so a payload just under the threshold counted
// whole, and with the other writes of its entry (the key it leaves, its
// delivery record) one entry went over the bound: a page of one, which
// cannot be cut, failed with "Txn is too big" on every call, and dlq add
// --all, dlq retry --all and the dispatcher's settle of that entry could
// never move it (6 MiB memtable, payloads 25 to 325 bytes under the
// threshold). The threshold is at most half the bound now: a value under
// it leaves the other half for the rest of its entry, a value over it
// goes to the value log as a pointer. The default memtable (16 MiB, the
// least [log] memtable_size takes) never had the problem: its threshold
// (1 MiB) is under half its bound (2.4 MiB).
func TestOneEntryFitsATransaction(t *testing.T) {
	ctx := context.Background()
	for _, memtable := range []int64{6 << 20, 16 << 20} {
		old := int(min(1<<20, memtable*15/100-1)) // the threshold Open used to set
		for under := 0; under <= 400; under += 25 {
			t.Run(fmt.Sprintf("%dMiB/%d-under", memtable>>20, under), func(t *testing.T) {
				l, err := Open(t.TempDir(), &Options{MemTableSize: memtable})
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				payload := []byte(`"` + strings.Repeat("p", old-under-2) + `"`)
				if _, err := l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: "e", Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
					Targets: []pipeline.Target{{Sink: "a", Route: "r", Payload: payload}}}}); err != nil {
					t.Fatal(err)
				}
				q := l.Queue("a")
				want := func(step string, n int, err error, st pipeline.QueueStats) {
					t.Helper()
					if err != nil || n != 1 {
						t.Fatalf("%s = %d, %v; want 1 moved", step, n, err)
					}
					if got, err := q.Stats(ctx); err != nil || got != st {
						t.Fatalf("Stats after %s = %+v, %v; want %+v", step, got, err, st)
					}
				}
				giveUp := func(string) string { return "given up: " + strings.Repeat("r", 100) }
				n, err := q.(pipeline.Abandoner).Abandon(ctx, 1000, giveUp)
				want("Abandon of the ready entry", n, err, pipeline.QueueStats{Dead: 1})
				n, err = q.RetryDead(ctx, nil)
				want("RetryDead(all)", n, err, pipeline.QueueStats{Retrying: 1})
				n, err = q.(pipeline.Abandoner).Abandon(ctx, 1000, giveUp)
				want("Abandon of the retrying entry", n, err, pipeline.QueueStats{Dead: 1})
				dls, err := q.DeadLetters(ctx, 0, 1)
				if err != nil || len(dls) != 1 || string(dls[0].Payload) != string(payload) {
					t.Fatalf("DeadLetters = %d, %v; want the one with its payload", len(dls), err)
				}
				n, err = q.RetryDead(ctx, []uint64{dls[0].Seq})
				want("RetryDead(named)", n, err, pipeline.QueueStats{Retrying: 1})
				ds, err := q.Fetch(ctx, 1)
				if err != nil || len(ds) != 1 || string(ds[0].Payload) != string(payload) {
					t.Fatalf("Fetch = %d, %v; want the entry with its payload", len(ds), err)
				}
				err = q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Dead, Err: strings.Repeat("e", 4<<10)}})
				want("Settle(Dead)", 1, err, pipeline.QueueStats{Dead: 1})
				n, err = q.DropDead(ctx, nil)
				want("DropDead(all)", n, err, pipeline.QueueStats{})
			})
		}
	}
}
