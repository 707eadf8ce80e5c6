package badgerlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
)

var _ pipeline.RetryHastener = (*queue)(nil)

// HastenRetries implements [pipeline.RetryHastener]: the sink's retry keys
// due after now, in key order (due time, then seq) and so earliest due
// first, each moved to a key due now (the same value: its target, attempt
// count and last error) in one transaction under q.mu, with its delivery
// record's next attempt. The keys are on disk, not only in memory, so the
// retries of failures from before a restart are found as well. Held keys
// (due at heldAt, after every other) end the walk. A page ends at max
// entries, once their payloads and errors reach [hastenBytes] (each is
// written again, so a page is that much of a write-ahead log record), and
// before Badger's own bound on a transaction: a page that does not fit is
// made again with the entries that did, as Abandon's is.
func (q *queue) HastenRetries(ctx context.Context, max int) (int, error) {
	if err := q.l.waitQueues(ctx); err != nil {
		return 0, err
	}
	for {
		n, wrote, err := q.hastenRetries(ctx, max)
		if err != nil && errors.Is(err, badger.ErrTxnTooBig) && wrote > 0 && wrote < max {
			max = wrote // nothing was written: the same page, shorter
			continue
		}
		return n, err
	}
}

// hastenRetries is one try of HastenRetries' page: on an error nothing is
// written, and wrote says how many entries were written into the
// transaction before it (ErrTxnTooBig: those fit).
func (q *queue) hastenRetries(ctx context.Context, max int) (n, wrote int, err error) {
	if max < 1 {
		return 0, 0, nil
	}
	if err := q.l.checkOpen(); err != nil {
		return 0, 0, err
	}
	if err := q.l.space.check(); err != nil {
		return 0, 0, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	txn := q.l.newTxn()
	defer txn.Discard()
	now := time.Now()
	held := uint64(heldAt.UnixNano())
	type found struct {
		key, val []byte
		seq      uint64
	}
	var fs []found
	size := 0
	it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry, PrefetchValues: true, PrefetchSize: 64})
	for it.Seek(retryKey(q.sink, now.Add(time.Nanosecond), 0)); it.ValidForPrefix(q.retry) && len(fs) < max && size < hastenBytes; it.Next() {
		rest := it.Item().Key()[len(q.retry):]
		if len(rest) != 16 {
			continue
		}
		due, seq := binary.BigEndian.Uint64(rest), binary.BigEndian.Uint64(rest[8:])
		if due >= held {
			break // held keys sort last: none after them waits for a retry
		}
		if _, leased := q.leases[seq]; leased { // (due <= now unless the clock stepped back)
			continue
		}
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			it.Close()
			return 0, 0, fmt.Errorf("hasten retries of %s: read entry %d: %w", q.sink, seq, err)
		}
		fs = append(fs, found{key: it.Item().KeyCopy(nil), val: v, seq: seq})
		size += len(v)
	}
	it.Close()
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if len(fs) == 0 {
		return 0, 0, nil
	}
	for _, f := range fs {
		if err := q.makeDue(txn, f.key, f.val, f.seq, now); err != nil {
			return 0, wrote, err
		}
		wrote++
	}
	if err := q.l.commit(txn); err != nil {
		return 0, wrote, fmt.Errorf("hasten retries of %s: %w", q.sink, err)
	}
	q.wake()
	return len(fs), wrote, nil
}

// hastenBytes bounds what one HastenRetries page writes again of its
// entries (their targets: a transform's output can be 1 MiB each).
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
	// AllVersions: the iterator returns the deletion marks too, rather
	// than pass them within Seek or Next, however many there are.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry, AllVersions: true})
	defer it.Close()
	var last []byte
	seen := 0
	for it.Seek(retryKey(q.sink, now.Add(time.Nanosecond), 0)); it.ValidForPrefix(q.retry); it.Next() {
		if seen++; seen > nextRetryWalk {
			return time.Time{}, fmt.Errorf("next retry of %s: more than %d versions of deleted keys to pass before compaction removes them", q.sink, nextRetryWalk)
		}
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
		if due >= uint64(heldAt.UnixNano()) {
			break
		}
		return time.Unix(0, int64(due)), nil
	}
	return time.Time{}, nil
}
