package badgerlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
)

var _ pipeline.RetryHastener = (*queue)(nil)

// retryWalk is the State of a badgerlog [pipeline.RetryWalk]: the last
// retry key a page of it went through (nil before the first), and the
// read timestamp of its first page's transaction. Every write to Badger
// is a commit with a timestamp above every read timestamp taken before it
// (Badger runs unmanaged: its oracle gives commit timestamps in order,
// and the committer applies each record in a Badger transaction of its
// own), so a retry key whose version is above readTs was written after
// the walk began: a settlement's (failed again, or not attempted and due
// again later), or the walk's own. A walk lives in memory only, and on
// Open Badger's next timestamp starts above every version it holds.
type retryWalk struct {
	after  []byte
	began  bool // readTs is set (it can be 0: a log with no write yet)
	readTs uint64
}

// HastenRetries implements [pipeline.RetryHastener]: the sink's retry keys
// due after now, in key order (due time, then seq) and so earliest due
// first, from the key after the one where the walk's last page stopped,
// each moved to a key due now (the same value: its target, attempt count
// and last error) in one transaction under q.mu, with its delivery
// record's next attempt. The keys are on disk, not only in memory, so the
// retries of failures from before a restart are found as well. A key
// written after the walk began (its version is above the walk's first
// read timestamp: made due, then settled Retry again, attempted or not)
// is passed by, as is a leased one. Held
// keys (due at heldAt, after every other) end the walk. A page ends at
// max entries, at [hastenScan] keys gone through, once their payloads and
// errors reach [hastenBytes] (each is written again, so a page is that
// much of a write-ahead log record), and before Badger's own bound on a
// transaction: a page that does not fit is made again with the entries
// that did, as Abandon's is.
func (q *queue) HastenRetries(ctx context.Context, w *pipeline.RetryWalk, max int) (int, error) {
	if w.Done || max < 1 {
		return 0, nil
	}
	if err := q.l.waitQueues(ctx); err != nil {
		return 0, err
	}
	if w.Began.IsZero() {
		w.Began = time.Now()
	}
	rw, _ := w.State.(*retryWalk)
	if rw == nil {
		rw = &retryWalk{}
		w.State = rw
	}
	for {
		p, err := q.hastenRetries(ctx, rw, max)
		if err != nil && errors.Is(err, badger.ErrTxnTooBig) && p.wrote > 0 && p.wrote < max {
			max = p.wrote // nothing was written: the same page, shorter
			continue
		}
		if err == nil {
			if p.last != nil {
				rw.after = p.last
			}
			w.Done = p.end
		}
		return p.n, err
	}
}

// hastenResult is what one try of a HastenRetries page did.
type hastenResult struct {
	n     int    // entries moved
	wrote int    // entries written into the transaction before an error (ErrTxnTooBig: those fit)
	last  []byte // the last key gone through; nil if none
	end   bool   // no retry key waits after last
}

// hastenRetries is one try of HastenRetries' page, after the retry key
// rw.after (nil: from the first): on an error nothing is written. The
// first try of a walk sets rw.readTs.
func (q *queue) hastenRetries(ctx context.Context, rw *retryWalk, max int) (res hastenResult, err error) {
	if err := q.l.checkOpen(); err != nil {
		return res, err
	}
	if err := q.l.space.check(); err != nil {
		return res, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	txn := q.l.newTxn()
	defer txn.Discard()
	if !rw.began {
		rw.began, rw.readTs = true, txn.ReadTs()
	}
	now := time.Now()
	held := uint64(heldAt.UnixNano())
	type found struct {
		key, val []byte
		seq      uint64
	}
	var fs []found
	size, scanned := 0, 0
	start := retryKey(q.sink, now.Add(time.Nanosecond), 0)
	if next := append(slices.Clip(rw.after), 0); bytes.Compare(next, start) > 0 {
		start = next // (a key's successor: keys are all as long)
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close() // (Close is idempotent: it is closed before the commit)
	it.Seek(start)
	for ; it.ValidForPrefix(q.retry) && len(fs) < max && size < hastenBytes && scanned < hastenScan; it.Next() {
		scanned++
		key := it.Item().Key()
		rest := key[len(q.retry):]
		if len(rest) != 16 {
			continue
		}
		due, seq := binary.BigEndian.Uint64(rest), binary.BigEndian.Uint64(rest[8:])
		if due >= held {
			break // held keys sort last: none after them waits for a retry
		}
		res.last = it.Item().KeyCopy(res.last[:0])
		if _, leased := q.leases[seq]; leased { // (due <= now unless the clock stepped back)
			continue
		}
		if it.Item().Version() > rw.readTs {
			continue // settled again since the walk began (see RetryWalk)
		}
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return hastenResult{}, fmt.Errorf("hasten retries of %s: read entry %d: %w", q.sink, seq, err)
		}
		fs = append(fs, found{key: it.Item().KeyCopy(nil), val: v, seq: seq})
		size += len(v)
	}
	res.end = !it.ValidForPrefix(q.retry) || (len(fs) < max && size < hastenBytes && scanned < hastenScan)
	it.Close()
	if err := ctx.Err(); err != nil {
		return hastenResult{}, err
	}
	if len(fs) == 0 {
		return res, nil
	}
	for _, f := range fs {
		if err := q.makeDue(txn, f.key, f.val, f.seq, now); err != nil {
			return hastenResult{wrote: res.wrote}, err
		}
		res.wrote++
	}
	if err := q.l.commit(txn); err != nil {
		return hastenResult{wrote: res.wrote}, fmt.Errorf("hasten retries of %s: %w", q.sink, err)
	}
	q.wake()
	res.n = len(fs)
	return res, nil
}

// hastenScan bounds the retry keys one HastenRetries page goes through,
// moved or passed by. Badger's iterator also passes the deletion marks of
// keys moved before (until compaction removes them), which this does not
// count: a page right after a retry-now of many may take longer.
var hastenScan = 4096 // a var: a test may lower it

// hastenBytes bounds what one HastenRetries page, or one transaction of
// a Hasten, writes again of its entries (their targets: a transform's
// output can be 1 MiB each).
var hastenBytes = 32 << 20 // a var: a test may lower it

var _ pipeline.RetryClock = (*queue)(nil)

// nextRetryWalk bounds the versions of keys one NextRetry looks at: live
// keys, and the versions Badger keeps of deleted ones until compaction
// removes them, two each (its write and its deletion), so about 1,000
// deleted keys. A retry-now of a million retries an hour ahead leaves a
// million deleted keys there, and a seek past them took 35 ms per 100,000
// on 2 cores.
const nextRetryWalk = 2000

// NextRetry implements [pipeline.RetryClock]: retry keys sort by due time,
// so the first live key due after now is the answer, found with one seek
// (keys only: no value is read) and without q.mu, so that a page polled
// every few seconds never waits for the sink's Fetch or Settle. A held
// key (due at heldAt, after every other) means that none is. A leased
// entry was due when it was fetched, so its key is before now (unless the
// clock stepped back). It looks at [nextRetryWalk] versions of keys at
// most, deleted ones included, and fails past them: the answer is then
// not known.
func (q *queue) NextRetry(ctx context.Context, now time.Time) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	if err := q.l.checkOpen(); err != nil {
		return time.Time{}, err
	}
	txn := q.l.db.NewTransaction(false)
	defer txn.Discard()
	var next time.Time
	_, cut := q.walkRetries(txn, retryKey(q.sink, now.Add(time.Nanosecond), 0), nextRetryWalk, func(_ *badger.Item, due, _ uint64) bool {
		next = time.Unix(0, int64(due))
		return false
	})
	if cut {
		return time.Time{}, fmt.Errorf("next retry of %s: more than %d versions of deleted keys to pass before compaction removes them", q.sink, nextRetryWalk)
	}
	return next, nil
}

// walkRetries calls visit with each live retry key of q from the key from
// on, in key order (due time, then seq), with its due time and seq, until
// visit returns false, at the held keys (which sort last), or once look
// versions of keys (deleted ones included) were gone through with more
// left (cut). It returns how many versions it went through.
func (q *queue) walkRetries(txn *badger.Txn, from []byte, look int, visit func(item *badger.Item, due, seq uint64) bool) (seen int, cut bool) {
	// AllVersions: the iterator returns the deletion marks too, rather
	// than pass them within Seek or Next, however many there are.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry, AllVersions: true})
	defer it.Close()
	var last []byte
	for it.Seek(from); it.ValidForPrefix(q.retry); it.Next() {
		if seen == look {
			return seen, true
		}
		seen++
		item := it.Item()
		key := item.Key()
		if bytes.Equal(key, last) {
			continue // an older version of the key before
		}
		last = append(last[:0], key...)
		rest := key[len(q.retry):]
		if item.IsDeletedOrExpired() || len(rest) != 16 {
			continue
		}
		due := binary.BigEndian.Uint64(rest)
		if due >= uint64(heldAt.UnixNano()) || !visit(item, due, binary.BigEndian.Uint64(rest[8:])) {
			break
		}
	}
	return seen, false
}
