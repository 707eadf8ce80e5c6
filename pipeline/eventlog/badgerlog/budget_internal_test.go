package badgerlog

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
)

// TestBudgetAgreesWithBadger: Append's budget (a wtxn without a Badger
// transaction) accepts and refuses the same writes as a Badger update
// transaction does, step by step, until both find the transaction full:
// by its count of entries (small ones) and by its size (values around the
// value threshold, some going to the value log), with deletes, and the
// keys and values Badger refuses outright.
func TestBudgetAgreesWithBadger(t *testing.T) {
	l := mustOpen(t, t.TempDir(), &Options{MemTableSize: 1 << 20})
	thr := l.valueThreshold
	if thr <= 0 || thr >= 1<<20 {
		t.Fatalf("value threshold %d: the test wants one below 1 MiB", thr)
	}
	type write struct {
		key, value []byte
		delete     bool
	}
	key := func(n int, i int) []byte {
		return append(bytes.Repeat([]byte{'k'}, n), byte(i), byte(i>>8), byte(i>>16))
	}
	tests := []struct {
		name     string
		next     func(r *rand.Rand, i int) write
		full     bool // the sequence must end with the transaction full
		minSteps int  // and take at least this many writes to get there
	}{
		{"small entries fill the count", func(r *rand.Rand, i int) write {
			return write{key: key(8, i), value: make([]byte, r.IntN(8))}
		}, true, 1000},
		{"values fill the size, some at the threshold", func(r *rand.Rand, i int) write {
			if i%5 == 4 { // at it or over it: a pointer to the value log
				return write{key: key(20, i), value: make([]byte, int(thr)+r.IntN(2))}
			}
			return write{key: key(20, i), value: make([]byte, r.IntN(int(thr)/20))}
		}, true, 20},
		{"a value one byte under the threshold", func(r *rand.Rand, i int) write {
			return write{key: key(20, i), value: make([]byte, int(thr)-1)} // in the tree: as big as a whole transaction
		}, true, 0},
		{"mixed, with deletes", func(r *rand.Rand, i int) write {
			if r.IntN(4) == 0 {
				return write{key: key(r.IntN(40), i), delete: true}
			}
			return write{key: key(r.IntN(100), i), value: make([]byte, r.IntN(int(thr)/50))}
		}, true, 20},
		{"empty key", func(r *rand.Rand, i int) write { return write{value: []byte("v")} }, false, 0},
		{"Badger's own prefix", func(r *rand.Rand, i int) write { return write{key: []byte("!badger!head"), value: []byte("v")} }, false, 0},
		{"key over 65000 bytes", func(r *rand.Rand, i int) write { return write{key: key(65000, i), value: []byte("v")} }, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			txn := l.db.NewTransaction(true)
			defer txn.Discard()
			b := l.newBudget()
			var steps int
			for i := 0; ; i++ {
				w := tt.next(r, i)
				var want, got error
				if w.delete {
					want, got = txn.Delete(w.key), b.add(w.key, nil)
				} else {
					want, got = txn.Set(w.key, w.value), b.add(w.key, w.value)
				}
				if (want == nil) != (got == nil) || errors.Is(want, badger.ErrTxnTooBig) != errors.Is(got, badger.ErrTxnTooBig) ||
					errors.Is(want, badger.ErrEmptyKey) != errors.Is(got, badger.ErrEmptyKey) ||
					errors.Is(want, badger.ErrInvalidKey) != errors.Is(got, badger.ErrInvalidKey) {
					t.Fatalf("write %d (key %d bytes, value %d, delete %v): Badger says %v, the budget %v",
						i, len(w.key), len(w.value), w.delete, want, got)
				}
				if want != nil {
					steps = i
					if full := errors.Is(want, badger.ErrTxnTooBig); full != tt.full {
						t.Fatalf("ended at write %d with %v; want the transaction full: %v", i, want, tt.full)
					}
					break
				}
			}
			if steps < tt.minSteps {
				t.Fatalf("ended after %d writes, want at least %d: the sequence tests little", steps, tt.minSteps)
			}
		})
	}
}

// TestAppendCountsAnEventAsBadgerWillStoreIt: an event whose record in
// Badger (meta and where its full record lies) falls just under the value
// threshold is kept in the tree at full size, though meta with the longest
// reference would reach the threshold and count as a pointer. Append must
// count it at full size: it refuses two such events up front (too big for
// a transaction: the threshold is half of Badger's bound), rather than
// write a record to the write-ahead log that one transaction cannot apply
// (the next start's replay failed on it when the threshold was the bound
// less one byte; it would now apply it in two and keep the refused
// events).
func TestAppendCountsAnEventAsBadgerWillStoreIt(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, &Options{MemTableSize: 1 << 20})
	defer func() { l.Close() }()
	thr := l.valueThreshold
	// Meta of thr-20 bytes: in [thr-maxRef, thr-minRef), made long by its
	// trace state (the one free-form string of meta without a limit of
	// its own).
	ev := pipeline.Event{ID: "019ae3f0-0000-7000-8000-000000000001", Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)}
	targets := []pipeline.Target{{Sink: "s", Route: "r"}}
	for n := int(thr) - 200; ; n++ {
		ev.TraceState = strings.Repeat("x", n)
		rec := eventRecord(&ev, targets)
		if size := rec.SizeVT(); size >= int(thr)-20 {
			if size != int(thr)-20 {
				t.Fatalf("no trace state gives a meta of %d bytes", thr-20)
			}
			break
		}
	}
	ev2 := ev
	ev2.ID = "019ae3f0-0000-7000-8000-000000000002"
	_, err := l.Append(context.Background(), []pipeline.Entry{{Event: ev, Targets: targets}, {Event: ev2, Targets: targets}})
	if !errors.Is(err, pipeline.ErrTooBig) {
		t.Fatalf("Append of two = %v; want ErrTooBig", err)
	}
	// As after a crash, with the same memtable: the write-ahead log replayed.
	l2, err := Open(snapshot(t, dir), &Options{MemTableSize: 1 << 20})
	if err != nil {
		t.Fatalf("Open after the refused Append: %v", err)
	}
	defer l2.Close()
	for _, id := range []string{ev.ID, ev2.ID} {
		if _, err := l2.Event(context.Background(), id); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("Event(%s) after the refused Append and a replay = %v; want ErrNotFound (nothing written)", id, err)
		}
	}
}
