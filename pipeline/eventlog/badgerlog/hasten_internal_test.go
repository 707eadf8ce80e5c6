package badgerlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// retryAll appends n events to sink a with payload, fetches them and
// settles each as a retry an hour away.
func retryAll(t *testing.T, l *DB, n int, payload []byte) pipeline.Queue {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		es := []pipeline.Entry{{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r", Payload: payload}}}}
		if _, err := l.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
	}
	q := l.Queue("a")
	for range n {
		ds, err := q.Fetch(ctx, 1)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Fetch = %d, %v", len(ds), err)
		}
		if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, Err: "503", RetryAt: time.Now().Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
	}
	return q
}

// hastenPages calls HastenRetries(max) on one walk until it is done and
// returns what each call moved.
func hastenPages(t *testing.T, q pipeline.Queue, max int) []int {
	t.Helper()
	var pages []int
	var w pipeline.RetryWalk
	for range 100 {
		n, err := q.(pipeline.RetryHastener).HastenRetries(context.Background(), &w, max)
		if err != nil {
			t.Fatalf("HastenRetries after pages %v: %v", pages, err)
		}
		pages = append(pages, n)
		if w.Done {
			return pages
		}
	}
	t.Fatalf("HastenRetries still moving after 100 pages: %v", pages)
	return nil
}

// TestHastenPagesAreBounded: a page of HastenRetries ends at hastenBytes
// of targets, and, with transform outputs of 900 KiB, before Badger's own
// bound on a transaction (2.4 MiB with the default memtable, payloads
// under the value threshold counted whole), which Abandon and RetryDead
// once failed on every call; pages go on until one moves nothing, and
// every entry is due with its payload.
func TestHastenPagesAreBounded(t *testing.T) {
	ctx := context.Background()
	t.Run("hastenBytes", func(t *testing.T) {
		defer func(b int) { hastenBytes = b }(hastenBytes)
		hastenBytes = 250
		l, err := Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		payload := []byte(`"` + strings.Repeat("p", 98) + `"`) // 100 bytes, 110 or so encoded
		q := retryAll(t, l, 7, payload)
		if got, want := fmt.Sprint(hastenPages(t, q, 1000)), "[3 3 1]"; got != want {
			t.Errorf("HastenRetries pages moved %s, want %s", got, want)
		}
		ds, err := q.Fetch(ctx, 10)
		if err != nil || len(ds) != 7 {
			t.Fatalf("Fetch after the pages = %d, %v; want all 7 due", len(ds), err)
		}
	})
	t.Run("Badger's transaction", func(t *testing.T) {
		l, err := Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		payload := []byte(`"` + strings.Repeat("p", 900<<10) + `"`)
		const n = 6
		q := retryAll(t, l, n, payload)
		pages := hastenPages(t, q, 1000)
		moved := 0
		for _, p := range pages {
			moved += p
		}
		if moved != n || len(pages) < 3 {
			t.Errorf("HastenRetries pages moved %v, want all %d in pages of what fits in a transaction", pages, n)
		}
		ds, err := q.Fetch(ctx, n)
		if err != nil || len(ds) != n {
			t.Fatalf("Fetch after the pages = %d, %v; want all %d due", len(ds), err, n)
		}
		for _, d := range ds {
			if string(d.Payload) != string(payload) || d.Attempt != 2 || d.LastError != "503" {
				t.Errorf("entry %d after HastenRetries: payload kept %v, attempt %d, last error %q", d.Seq, string(d.Payload) == string(payload), d.Attempt, d.LastError)
			}
		}
	})
}

// TestNextRetryPassesDeletedKeysWithinItsBound: after a retry-now, the old
// keys of the retries it made due are deletion marks an hour ahead until
// compaction (two versions each: the write and the deletion); NextRetry
// passes them to the retry due after them while their versions are fewer
// than nextRetryWalk, and beyond that fails (not known) rather than walk
// them all.
func TestNextRetryPassesDeletedKeysWithinItsBound(t *testing.T) {
	for _, tt := range []struct {
		name    string
		retries int
		known   bool
	}{
		{"fewer marks than the bound", nextRetryWalk/2 - 10, true},
		{"more marks than the bound", nextRetryWalk/2 + 10, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			q := retryAll(t, l, tt.retries, nil)
			hastenPages(t, q, 1000)
			ctx := context.Background()
			ds, err := q.Fetch(ctx, 1) // one of them fails again, two hours ahead
			if err != nil || len(ds) != 1 {
				t.Fatalf("Fetch = %d, %v", len(ds), err)
			}
			later := time.Now().Add(2 * time.Hour)
			if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, Err: "503", RetryAt: later}}); err != nil {
				t.Fatal(err)
			}
			at, err := q.(pipeline.RetryClock).NextRetry(ctx, time.Now())
			switch {
			case tt.known && (err != nil || !at.Equal(time.Unix(0, later.UnixNano()))):
				t.Errorf("NextRetry past %d deletion marks = %v, %v; want %v", tt.retries, at, err, later)
			case !tt.known && (err == nil || !strings.Contains(err.Error(), "deleted keys")):
				t.Errorf("NextRetry past %d deletion marks = %v, %v; want an error: more than %d versions to pass", tt.retries, at, err, nextRetryWalk)
			}
		})
	}
}

// TestHastenScanIsBounded: a page goes through hastenScan retry keys at
// most, moved or passed by, and the walk goes on from there: here every
// entry failed after the walk began (its retry key's version is above
// the walk's read timestamp), so each is passed by, and each page moves
// none.
func TestHastenScanIsBounded(t *testing.T) {
	defer func(n int) { hastenScan = n }(hastenScan)
	hastenScan = 2
	l, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	began := time.Now()
	txn := l.db.NewTransaction(false)
	rw := &retryWalk{began: true, readTs: txn.ReadTs()}
	txn.Discard()
	q := retryAll(t, l, 5, nil).(pipeline.RetryHastener)
	w := pipeline.RetryWalk{Began: began, State: rw}
	var pages []int
	for !w.Done && len(pages) < 10 {
		n, err := q.HastenRetries(context.Background(), &w, 1000)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, n)
	}
	if got, want := fmt.Sprint(pages), "[0 0 0]"; got != want {
		t.Errorf("pages of a walk that passes every entry by = %s, want %s (2, 2, then 1 key gone through)", got, want)
	}
	if n, err := q.HastenRetries(context.Background(), &pipeline.RetryWalk{}, 1000); err != nil || n != 2 {
		t.Errorf("a new walk, 2 keys a page = %d, %v; want 2", n, err)
	}
}

// retryMany appends n events to sink a with payload, a thousand per
// Append (a hundred with a payload), and settles each as a retry due at
// due (the attempt failed: "503"); it returns their seqs in order.
func retryMany(t *testing.T, l *DB, prefix string, n int, payload []byte, due time.Time) []uint64 {
	t.Helper()
	ctx := context.Background()
	q := l.Queue("a")
	per := 1000
	if payload != nil {
		per = 100
	}
	var seqs []uint64
	for i := 0; i < n; i += per {
		var es []pipeline.Entry
		for j := i; j < min(i+per, n); j++ {
			es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint(prefix, j), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "a", Route: "r", Payload: payload}}})
		}
		if _, err := l.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
		ds, err := q.Fetch(ctx, len(es))
		if err != nil || len(ds) != len(es) {
			t.Fatalf("Fetch = %d, %v; want the %d just appended", len(ds), err, len(es))
		}
		ss := make([]pipeline.Settlement, len(ds))
		for k, d := range ds {
			ss[k] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, Err: "503", RetryAt: due}
			seqs = append(seqs, d.Seq)
		}
		if err := q.Settle(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	return seqs
}

// countHasten makes hastenHook add the keys each Hasten reads to *n until
// the test ends.
func countHasten(t *testing.T, n *int) {
	hastenHook = func(looked int) { *n += looked }
	t.Cleanup(func() { hastenHook = nil })
}

// wantDueNow fetches the entries seqs at once, each with its second
// attempt and the error of its first, its record due about now.
func wantDueNow(t *testing.T, l *DB, seqs []uint64, later time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ds, err := l.Queue("a").Fetch(ctx, len(seqs)+1)
	if err != nil {
		t.Fatalf("Fetch after Hasten = %v; want the %d entries hastened", err, len(seqs))
	}
	var got []uint64
	for _, d := range ds {
		got = append(got, d.Seq)
		if d.Attempt != 2 || d.LastError != "503" {
			t.Errorf("entry %d after Hasten: attempt %d, last error %q; want 2, %q", d.Seq, d.Attempt, d.LastError, "503")
		}
	}
	if !slices.Equal(got, seqs) {
		t.Fatalf("Fetch after Hasten = seqs %v; want %v", got, seqs)
	}
	rs, err := l.Deliveries(ctx, fmt.Sprint("late", 0))
	if err == nil && len(rs) == 1 && !rs[0].NextAttemptAt.Before(later.Add(-time.Minute)) {
		err = fmt.Errorf("next_attempt_at %v", rs[0].NextAttemptAt)
	}
	if err != nil {
		t.Errorf("late0's record after Hasten: %v; want it due about now", err)
	}
}

// TestHastenIsBoundedByTheSeqsAsked: with 100,000 other retries of the
// sink due before them (a day-long outage's), Hasten of 10 entries due
// in two hours, behind them all, reads two keys for each (its delivery
// record, then its retry key), not the sink's retry keys (which took
// every one of them under q.mu, the sink's Fetch and Settle waiting); all
// 10 are found and made due, and the other retries keep their time.
func TestHastenIsBoundedByTheSeqsAsked(t *testing.T) {
	if testing.Short() {
		t.Skip("appends and retries 100,000 events")
	}
	const others, asked = 100_000, 10
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	retryMany(t, l, "other", others, nil, time.Now().Add(time.Hour))
	later := time.Now().Add(2 * time.Hour)
	seqs := retryMany(t, l, "late", asked, nil, later)
	q := l.Queue("a").(*queue)
	if at, err := q.NextRetry(context.Background(), time.Now()); err != nil || !at.Before(later.Add(-time.Minute)) {
		t.Fatalf("NextRetry = %v, %v; want the others' hour (the premise: they sort before the entries asked)", at, err)
	}
	looked := 0
	countHasten(t, &looked)
	n, err := q.Hasten(context.Background(), append([]uint64{seqs[3]}, seqs...)) // one asked twice
	if err != nil || n != asked {
		t.Fatalf("Hasten(%d entries behind %d retries) = %d, %v; want %d, nil", asked, others, n, err, asked)
	}
	t.Logf("Hasten of %d entries behind %d retries read %d keys", asked, others, looked)
	if looked > 2*asked {
		t.Errorf("Hasten of %d entries read %d keys with %d other retries waiting; want at most %d (a record and a retry key each)", asked, looked, others, 2*asked)
	}
	wantDueNow(t, l, seqs, later)
}

// TestHastenFindsEntriesOfAnOlderLog: an entry whose delivery record does
// not say when it is due (retrying without next_attempt_at, or no record:
// a log written before records said so) is looked for among the retry
// keys due after now, and found and made due like any other; when more
// than hastenLook versions of keys come before it, Hasten stops there and
// the entry keeps its time (and an entry found by its record is moved all
// the same).
func TestHastenFindsEntriesOfAnOlderLog(t *testing.T) {
	defer func(n int) { hastenLook = n }(hastenLook)
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	q := l.Queue("a").(*queue)
	retryMany(t, l, "other", 500, nil, time.Now().Add(time.Hour))
	later := time.Now().Add(2 * time.Hour)
	seqs := retryMany(t, l, "late", 3, nil, later)
	// late0 is a retry of an older log; late1 has no record; late2's
	// record says when it is due.
	txn := l.newTxn()
	d, err := getDelivery(txn.Txn, seqs[0], "a")
	if err != nil || d.GetState() != logpb.Delivery_RETRYING {
		t.Fatalf("late0's record = %v, %v; want retrying", d, err)
	}
	d.NextAttemptUnixNano = 0
	if err := txn.putDelivery(seqs[0], "a", d); err != nil {
		t.Fatal(err)
	}
	if err := txn.Delete(deliveryKey(seqs[1], "a")); err != nil {
		t.Fatal(err)
	}
	if err := l.commit(txn); err != nil {
		t.Fatal(err)
	}
	txn.Discard()

	looked := 0
	countHasten(t, &looked)
	hastenLook = 100
	if n, err := q.Hasten(context.Background(), seqs[:2]); err != nil || n != 0 {
		t.Fatalf("Hasten(entries of an older log behind 500 retries) with hastenLook 100 = %d, %v; want 0, nil", n, err)
	}
	if want := 2 + hastenLook; looked > want {
		t.Errorf("Hasten with hastenLook %d read %d keys; want at most %d (the records, then %d versions)", hastenLook, looked, want, hastenLook)
	}
	hastenLook = nextRetryWalk
	looked = 0
	if n, err := q.Hasten(context.Background(), seqs); err != nil || n != 3 {
		t.Fatalf("Hasten(two entries of an older log and one of today's behind 500 retries) = %d, %v; want 3, nil", n, err)
	}
	t.Logf("Hasten of 3 entries, 2 of an older log, behind 500 retries read %d keys", looked)
	if looked > 3+1+500+3 {
		t.Errorf("Hasten read %d keys; want the 3 records, late2's key and the retry keys up to late1's", looked)
	}
	wantDueNow(t, l, seqs, later)
}

// TestHastenFindsWhatItsRecordSays: Hasten finds an entry's retry key by
// the due time in its delivery record, which holds because every writer
// of a retry key due later writes that record with it. Entries go through
// each writer of retry keys (a retry, attempted or not; one made due by
// Hasten and retried again; a dead letter retried; a replay of a
// delivered event; a held retry released) and then wait an hour or two,
// beside entries that do not wait (held, leased, due, delivered, ready):
// Hasten of them all moves exactly the ones a walk of the retry keys
// finds due later, before and after a restart.
func TestHastenFindsWhatItsRecordSays(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprint("restart=", restart), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dir := t.TempDir()
			l := mustOpen(t, dir, nil)
			defer func() { l.Close() }()
			q := l.Queue("a").(*queue)
			n := 0
			add := func() { // appends the next event
				t.Helper()
				es := []pipeline.Entry{{Event: pipeline.Event{ID: fmt.Sprint("w", n), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
					Targets: []pipeline.Target{{Sink: "a", Route: "r"}}}}
				n++
				if _, err := l.Append(ctx, es); err != nil {
					t.Fatal(err)
				}
			}
			fetch := func(want uint64) uint64 { // fetches the one entry due, want (0: the one just appended)
				t.Helper()
				ds, err := q.Fetch(ctx, 2)
				if err != nil || len(ds) != 1 || (want != 0 && ds[0].Seq != want) {
					t.Fatalf("Fetch = %v, %v; want the entry %d alone", ds, err, want)
				}
				return ds[0].Seq
			}
			settle := func(s pipeline.Settlement) {
				t.Helper()
				if s.Err == "" {
					s.Err = "503"
				}
				if err := q.Settle(ctx, []pipeline.Settlement{s}); err != nil {
					t.Fatal(err)
				}
			}
			hour := time.Now().Add(time.Hour)
			var all []uint64
			next := func() uint64 { add(); seq := fetch(0); all = append(all, seq); return seq }

			retried := next()
			settle(pipeline.Settlement{Seq: retried, Outcome: pipeline.Retry, RetryAt: hour})
			notAttempted := next()
			settle(pipeline.Settlement{Seq: notAttempted, Outcome: pipeline.Retry, RetryAt: hour, NotAttempted: true})
			hastened := next()
			settle(pipeline.Settlement{Seq: hastened, Outcome: pipeline.Retry, RetryAt: hour})
			if m, err := q.Hasten(ctx, []uint64{hastened}); err != nil || m != 1 {
				t.Fatalf("Hasten = %d, %v; want 1", m, err)
			}
			settle(pipeline.Settlement{Seq: fetch(hastened), Outcome: pipeline.Retry, RetryAt: hour.Add(time.Hour)})
			dead := next()
			settle(pipeline.Settlement{Seq: dead, Outcome: pipeline.Dead})
			if m, err := q.RetryDead(ctx, []uint64{dead}); err != nil || m != 1 {
				t.Fatalf("RetryDead = %d, %v; want 1", m, err)
			}
			settle(pipeline.Settlement{Seq: fetch(dead), Outcome: pipeline.Retry, RetryAt: hour})
			replayed := next()
			settle(pipeline.Settlement{Seq: replayed, Outcome: pipeline.Ack})
			if m, err := q.Requeue(ctx, []pipeline.Requeue{{Seq: replayed, Route: "r"}}); err != nil || m != 1 {
				t.Fatalf("Requeue = %d, %v; want 1", m, err)
			}
			settle(pipeline.Settlement{Seq: fetch(replayed), Outcome: pipeline.Retry, RetryAt: hour})
			released := next()
			settle(pipeline.Settlement{Seq: released, Outcome: pipeline.Retry, RetryAt: time.Now()})
			settle(pipeline.Settlement{Seq: fetch(released), Outcome: pipeline.Hold})
			if m, err := q.Release(ctx, []uint64{released}); err != nil || m != 1 {
				t.Fatalf("Release = %d, %v; want 1", m, err)
			}
			settle(pipeline.Settlement{Seq: fetch(released), Outcome: pipeline.Retry, RetryAt: hour})
			held := next()
			settle(pipeline.Settlement{Seq: held, Outcome: pipeline.Hold})
			heldRetry := next()
			settle(pipeline.Settlement{Seq: heldRetry, Outcome: pipeline.Retry, RetryAt: time.Now()})
			settle(pipeline.Settlement{Seq: fetch(heldRetry), Outcome: pipeline.Hold})
			settle(pipeline.Settlement{Seq: next(), Outcome: pipeline.Ack})
			next() // leased
			due := next()
			settle(pipeline.Settlement{Seq: due, Outcome: pipeline.Retry, RetryAt: time.Now()})
			add()
			all = append(all, due+1, due+2) // one ready, and a seq not in the log

			if restart {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l = mustOpen(t, dir, nil)
				q = l.Queue("a").(*queue)
			}
			waiting := func() []uint64 { // the retry keys due later, by a walk
				t.Helper()
				var seqs []uint64
				now := uint64(time.Now().UnixNano())
				l.db.View(func(txn *badger.Txn) error {
					it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry})
					defer it.Close()
					for it.Seek(q.retry); it.ValidForPrefix(q.retry); it.Next() {
						rest := it.Item().Key()[len(q.retry):]
						if due := binary.BigEndian.Uint64(rest); due > now && due < uint64(heldAt.UnixNano()) {
							seqs = append(seqs, binary.BigEndian.Uint64(rest[8:]))
						}
					}
					return nil
				})
				slices.Sort(seqs)
				return seqs
			}
			want := []uint64{retried, notAttempted, hastened, dead, replayed, released}
			if got := waiting(); !slices.Equal(got, want) {
				t.Fatalf("retries due later = %v; want %v (the premise)", got, want)
			}
			looked := 0
			countHasten(t, &looked)
			if m, err := q.Hasten(ctx, all); err != nil || m != len(want) {
				t.Fatalf("Hasten(every seq) = %d, %v; want %d: the entries %v", m, err, len(want), want)
			}
			if got := waiting(); len(got) != 0 {
				t.Errorf("retries due later after Hasten = %v; want none", got)
			}
			t.Logf("Hasten of %d seqs read %d keys", len(all), looked)
		})
	}
}

// TestHastenMovesWhatOneTransactionCannotHold: a Hasten of the 1,000
// entries a dispatcher parks at most, each with a 3 KB transform output
// (a chat message), writes more than Badger takes in one transaction (15%
// of the memtable, 2.4 MiB by default), which failed the whole call and
// left every entry to its Retry-After; they are moved in pages, each
// ending before that bound and at hastenBytes, and every one is due with
// its payload.
func TestHastenMovesWhatOneTransactionCannotHold(t *testing.T) {
	t.Run("Badger's transaction", func(t *testing.T) {
		l := mustOpen(t, t.TempDir(), nil)
		defer l.Close()
		payload := []byte(`"` + strings.Repeat("p", 3000) + `"`)
		const n = 1000
		seqs := retryMany(t, l, "big", n, payload, time.Now().Add(time.Hour))
		commits := l.retryWrites.Load()
		m, err := l.Queue("a").(pipeline.Hastener).Hasten(context.Background(), seqs)
		if err != nil || m != n {
			t.Fatalf("Hasten(%d entries of 3 KB) = %d, %v; want %d, nil", n, m, err, n)
		}
		if pages := l.retryWrites.Load() - commits; pages < 2 {
			t.Errorf("Hasten of %d entries of 3 KB wrote %d transactions; want more than one (the premise: they do not fit in one)", n, pages)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ds, err := l.Queue("a").Fetch(ctx, n+1)
		if err != nil || len(ds) != n {
			t.Fatalf("Fetch after Hasten = %d, %v; want all %d due", len(ds), err, n)
		}
		for _, d := range ds {
			if string(d.Payload) != string(payload) || d.Attempt != 2 || d.LastError != "503" {
				t.Fatalf("entry %d after Hasten: payload kept %v, attempt %d, last error %q", d.Seq, string(d.Payload) == string(payload), d.Attempt, d.LastError)
			}
		}
	})
	t.Run("hastenBytes", func(t *testing.T) {
		defer func(b int) { hastenBytes = b }(hastenBytes)
		hastenBytes = 250
		l := mustOpen(t, t.TempDir(), nil)
		defer l.Close()
		payload := []byte(`"` + strings.Repeat("p", 98) + `"`) // 100 bytes, 110 or so encoded
		seqs := retryMany(t, l, "p", 7, payload, time.Now().Add(time.Hour))
		commits := l.retryWrites.Load()
		if m, err := l.Queue("a").(pipeline.Hastener).Hasten(context.Background(), seqs); err != nil || m != 7 {
			t.Fatalf("Hasten = %d, %v; want 7, nil", m, err)
		}
		if pages := l.retryWrites.Load() - commits; pages != 3 {
			t.Errorf("Hasten of 7 entries of 110 bytes, hastenBytes 250, wrote %d transactions; want 3 (3, 3, then 1)", pages)
		}
	})
}
