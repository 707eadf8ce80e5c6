package badgerlog

import (
	"hash/maphash"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Most dedup keys an Append looks up are new, and proving that in Badger
// costs a lookup in every memtable and level (~5% of ingest's CPU:
// docs/performance.md). dedupFilter is a Bloom filter of the dedup keys in
// the log: when it says a key is not there, it is not, and Append skips
// the lookup; when it says it may be, Append looks as before. So a false
// positive costs the lookup it always cost, and the filter is only an
// optimisation: the log answers the same with or without it.
//
// It is built in the background from a snapshot of the d/ keys: at Open,
// and again whenever as many keys were added as it was sized for (by then
// it also holds expired ones, which the build leaves out). Until the first
// build ends it says "may be" to every key. A key must be in the filter
// once its Append committed: Append adds each new key after its commit
// (add), and while a build runs, add also keeps the key for the new filter,
// so that every key is either in the build's snapshot (committed before the
// build began) or kept (added after).
type dedupFilter struct {
	seed maphash.Seed

	mu       sync.Mutex
	bloom    *z.Bloom // nil until built
	capacity int      // keys bloom was sized for
	added    int      // keys in bloom
	building bool
	pending  []uint64 // hashes added while a build runs
	rebuild  chan struct{}
}

// Filter sizes: at least minDedupFilter keys, twice the keys found, at most
// maxDedupFilter (~20 MiB at 1% false positives); past that, more lookups
// go to Badger.
const (
	minDedupFilter = 1 << 16
	maxDedupFilter = 16 << 20
)

func newDedupFilter() *dedupFilter {
	return &dedupFilter{seed: maphash.MakeSeed(), rebuild: make(chan struct{}, 1)}
}

func (f *dedupFilter) hash(key []byte) uint64 { return maphash.Bytes(f.seed, key) }

// mayHave reports whether key may be in the log; false is certain.
func (f *dedupFilter) mayHave(key []byte) bool {
	h := f.hash(key)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bloom == nil || f.bloom.Has(h)
}

// add records keys (an Append's new dedup keys, to their event ids),
// which the Append has committed.
func (f *dedupFilter) add(keys map[string]string) {
	if len(keys) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range keys {
		h := maphash.String(f.seed, k) // as hash: the same bytes hash the same
		if f.bloom != nil {
			f.bloom.Add(h)
			f.added++
		}
		if f.building {
			f.pending = append(f.pending, h)
		}
	}
	// Full: build it again, bigger, or (at its largest) to drop the
	// expired keys once twice as many were added.
	if f.bloom != nil && !f.building && (f.added > f.capacity && f.capacity < maxDedupFilter || f.added > 2*f.capacity) {
		select {
		case f.rebuild <- struct{}{}:
		default:
		}
	}
}

// build makes a new filter from db's d/ keys and the keys added meanwhile,
// and puts it in place, unless stop is closed first.
func (f *dedupFilter) build(db *badger.DB, stop <-chan struct{}) {
	f.mu.Lock()
	f.building, f.pending = true, nil
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.building, f.pending = false, nil
		f.mu.Unlock()
	}()
	// Taken after building is set: a key committed before is in it, one
	// added after is in pending.
	snap := db.NewTransaction(false)
	defer snap.Discard()
	if dedupBuildHook != nil {
		dedupBuildHook()
	}
	n := 0
	if !walkKeys(snap, preDedup, stop, func([]byte) { n++ }) {
		return
	}
	capacity := min(max(2*n, minDedupFilter), maxDedupFilter)
	bloom := z.NewBloomFilter(float64(capacity), 0.01)
	if !walkKeys(snap, preDedup, stop, func(k []byte) { bloom.Add(f.hash(k)) }) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.pending {
		bloom.Add(h)
	}
	f.bloom, f.capacity, f.added = bloom, capacity, n+len(f.pending)
}

// dedupBuildHook, when set (by tests only), is called by build once it
// has its snapshot.
var dedupBuildHook func()

// walkKeys calls fn with each key under prefix (not expired) in txn, and
// reports whether it got to the end before stop was closed.
func walkKeys(txn *badger.Txn, prefix []byte, stop <-chan struct{}, fn func(key []byte)) bool {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	n := 0
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		if n++; n%4096 == 0 {
			select {
			case <-stop:
				return false
			default:
			}
		}
		fn(it.Item().Key())
	}
	return true
}

// dedupFilterLoop builds l's dedup filter, and again whenever it asks.
func (l *DB) dedupFilterLoop() {
	defer l.wg.Done()
	for {
		l.dedup.build(l.db, l.closed)
		select {
		case <-l.closed:
			return
		case <-l.dedup.rebuild:
		}
	}
}
