package badgerlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// A held entry (pipeline.Hold, for delivery.order_key) is a retry entry
// due at heldAt, the largest due time a key can hold: it sorts after every
// real retry, so Fetch never reaches it, and everything that treats retry
// entries as queued (Stats, Oldest, Requeue's check, retention) treats it
// so too. Release moves it to a retry key due now.
var heldAt = time.Unix(0, math.MaxInt64)

var _ pipeline.Holder = (*queue)(nil)

// hold parks the leased entry seq, whose lease key (if any) txn has
// deleted, with its target unchanged: no attempt counted. An entry never
// attempted (ready) has no delivery record, and it leaves the ready
// entries: hold writes its record, queued, so that it still reads as
// queued (and is selected as pending), and so that Open does not queue it
// again (see pending.go). One attempted before keeps its record. q.mu is
// held.
func (q *queue) hold(txn *wtxn, seq uint64, ready bool, t *logpb.Target) error {
	v, err := targetUTF8.encoded(t.MarshalVT())
	if err != nil {
		return fmt.Errorf("encode queue entry: %w", err)
	}
	if err := txn.Set(retryKey(q.sink, heldAt, seq), v); err != nil {
		return q.l.writeErr(err)
	}
	if ready {
		d := &logpb.Delivery{Route: t.GetRoute(), State: logpb.Delivery_QUEUED, Attempts: t.GetAttempts(), LastError: t.GetLastError()}
		if err := txn.putDelivery(seq, q.sink, d); err != nil {
			return q.l.writeErr(err)
		}
	}
	return nil
}

// Release implements [pipeline.Holder].
func (q *queue) Release(ctx context.Context, seqs []uint64) (int, error) {
	if err := q.l.checkOpen(); err != nil {
		return 0, err
	}
	if seqs == nil {
		return q.releaseAll(ctx)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	txn := q.l.newTxn()
	defer txn.Discard()
	n, err := q.releaseIn(txn, seqs, time.Now())
	if err != nil || n == 0 {
		return 0, err // nothing held: nothing to write, a full disk or not
	}
	if err := q.l.space.check(); err != nil {
		return 0, err
	}
	if err := q.l.commit(txn); err != nil {
		return 0, err
	}
	if n > 0 {
		q.wake()
	}
	return n, nil
}

// SettleRelease implements [pipeline.Holder].
func (q *queue) SettleRelease(ctx context.Context, s []pipeline.Settlement, release []uint64) error {
	return q.settleRelease(ctx, s, release)
}

// releaseIn moves the held entries seqs to retry keys due at now in txn
// and returns how many it moved. q.mu is held.
func (q *queue) releaseIn(txn *wtxn, seqs []uint64, now time.Time) (int, error) {
	n := 0
	for _, seq := range slices.Compact(slices.Sorted(slices.Values(seqs))) {
		key := retryKey(q.sink, heldAt, seq)
		item, err := txn.Get(key)
		if err == badger.ErrKeyNotFound {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("release %s entry %d: %w", q.sink, seq, err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return 0, fmt.Errorf("release %s entry %d: %w", q.sink, seq, err)
		}
		if err := txn.Delete(key); err != nil {
			return 0, q.l.writeErr(err)
		}
		if err := txn.Set(retryKey(q.sink, now, seq), v); err != nil {
			return 0, q.l.writeErr(err)
		}
		n++
	}
	return n, nil
}

// releaseAll releases every held entry, releaseBatch per transaction.
func (q *queue) releaseAll(ctx context.Context) (int, error) {
	first := retryKey(q.sink, heldAt, 0)
	prefix := first[:len(first)-8]
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var seqs []uint64
		err := q.l.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Seek(prefix); it.ValidForPrefix(prefix) && len(seqs) < releaseBatch; it.Next() {
				if k := it.Item().Key(); len(k) == len(first) {
					seqs = append(seqs, binary.BigEndian.Uint64(k[len(prefix):]))
				}
			}
			return nil
		})
		if err != nil || len(seqs) == 0 {
			return total, err
		}
		n, err := q.Release(ctx, seqs)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// releaseBatch bounds the entries one transaction of releaseAll moves.
const releaseBatch = 1000

// Waiting implements [pipeline.Holder]: one pass over the sink's retry
// keys and (dead set) its dead-letter keys, then over its ready entries up
// to the highest seq seen, reading each event.
func (q *queue) Waiting(ctx context.Context, dead bool, visit func(pipeline.Waiting) error) error {
	if err := q.l.waitQueues(ctx); err != nil {
		return err
	}
	held := uint64(heldAt.UnixNano())
	// The queued entries are taken with the snapshot, under q.mu (see
	// snapshot): one that a Settle moves to a retry key while the keys
	// are walked is then reported as it was, not missed.
	q.mu.Lock()
	txn := q.l.db.NewTransaction(false)
	q.pmu.Lock()
	queued := q.pending.below(math.MaxUint64)
	q.pmu.Unlock()
	q.mu.Unlock()
	defer txn.Discard()
	top := uint64(0)
	one := func(seq uint64, st pipeline.WaitingState) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		top = max(top, seq)
		rec, err := q.l.readEvent(txn, seq)
		if err != nil {
			return fmt.Errorf("event %d of queue %s: %w", seq, q.sink, err)
		}
		return visit(pipeline.Waiting{Seq: seq, Event: eventFromRecord(rec), State: st})
	}
	each := func(prefix []byte, state func(key []byte) (uint64, pipeline.WaitingState, bool)) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			seq, st, ok := state(it.Item().Key()[len(prefix):])
			if !ok {
				continue
			}
			if err := one(seq, st); err != nil {
				return err
			}
		}
		return nil
	}
	if err := each(q.retry, func(k []byte) (uint64, pipeline.WaitingState, bool) {
		if len(k) != 16 {
			return 0, 0, false
		}
		if binary.BigEndian.Uint64(k[:8]) == held {
			return binary.BigEndian.Uint64(k[8:]), pipeline.WaitingHeld, true
		}
		return binary.BigEndian.Uint64(k[8:]), pipeline.WaitingRetry, true
	}); err != nil {
		return err
	}
	if dead {
		if err := each(q.dead, func(k []byte) (uint64, pipeline.WaitingState, bool) {
			if len(k) != 8 {
				return 0, 0, false
			}
			return binary.BigEndian.Uint64(k), pipeline.WaitingDead, true
		}); err != nil {
			return err
		}
	}
	below, _ := slices.BinarySearch(queued, top)
	for _, seq := range queued[:below] {
		if err := one(seq, pipeline.WaitingReady); err != nil {
			return err
		}
	}
	return nil
}

var _ pipeline.Hastener = (*queue)(nil)

// Hasten implements [pipeline.Hastener]: one pass over the sink's retry
// keys (keys only), then each entry found moves to a key due now, in one
// transaction.
func (q *queue) Hasten(ctx context.Context, seqs []uint64) (int, error) {
	if err := q.l.checkOpen(); err != nil {
		return 0, err
	}
	if err := q.l.space.check(); err != nil {
		return 0, err
	}
	want := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		want[s] = true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	txn := q.l.newTxn()
	defer txn.Discard()
	now := time.Now()
	first := retryKey(q.sink, now, 0)
	prefix := first[:len(first)-16]
	var found [][]byte
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		k := it.Item().Key()
		if len(k) != len(first) {
			continue
		}
		due, seq := binary.BigEndian.Uint64(k[len(prefix):]), binary.BigEndian.Uint64(k[len(prefix)+8:])
		if !want[seq] || int64(due) <= now.UnixNano() || due == uint64(heldAt.UnixNano()) {
			continue
		}
		if _, leased := q.leases[seq]; leased { // (due <= now unless the clock stepped back)
			continue
		}
		found = append(found, it.Item().KeyCopy(nil))
	}
	it.Close()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	for _, key := range found {
		item, err := txn.Get(key)
		if err != nil {
			return 0, fmt.Errorf("hasten %s entry: %w", q.sink, err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return 0, fmt.Errorf("hasten %s entry: %w", q.sink, err)
		}
		if err := q.makeDue(txn, key, v, binary.BigEndian.Uint64(key[len(prefix)+8:]), now); err != nil {
			return 0, err
		}
	}
	if len(found) == 0 {
		return 0, nil
	}
	if err := q.l.commit(txn); err != nil {
		return 0, err
	}
	q.wake()
	return len(found), nil
}

// makeDue writes the retry entry key, whose value is val, of seq again
// due at now, and says so in its delivery record's next_attempt_at (of a
// retry, and of an event the sink did not attempt, still queued), in txn.
func (q *queue) makeDue(txn *wtxn, key, val []byte, seq uint64, now time.Time) error {
	if err := txn.Delete(key); err != nil {
		return q.l.writeErr(err)
	}
	if err := txn.Set(retryKey(q.sink, now, seq), val); err != nil {
		return q.l.writeErr(err)
	}
	d, err := getDelivery(txn.Txn, seq, q.sink)
	if err != nil {
		return fmt.Errorf("hasten %s entry %d: %w", q.sink, seq, err)
	}
	if d != nil && (d.State == logpb.Delivery_RETRYING || d.NextAttemptUnixNano != 0) {
		d.NextAttemptUnixNano = now.UnixNano()
		if err := txn.putDelivery(seq, q.sink, d); err != nil {
			return q.l.writeErr(err)
		}
	}
	return nil
}
