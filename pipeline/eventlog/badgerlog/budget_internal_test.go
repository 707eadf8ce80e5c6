package badgerlog

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/dgraph-io/badger/v4"
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
