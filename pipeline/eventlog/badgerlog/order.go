package badgerlog

import (
	"context"
	"encoding/binary"
	"errors"
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

// Hasten implements [pipeline.Hastener], under q.mu, at a cost bounded
// by the seqs asked for, not by the queue (P9: a sink in a day-long
// outage has millions of retry keys, and its Fetch and Settle wait on
// q.mu meanwhile). Each asked entry's retry key is found with two point
// lookups: its delivery record, whose next attempt is the due time of
// its key, then that key. The record proves it: the only writer of a
// retry key due later is a Retry settlement (putSettled), which writes
// the record with next_attempt_at = RetryAt in the same transaction (so
// in the same write-ahead log record, replayed whole after a crash); the
// other writers of retry keys write them due now (Release, RetryDead,
// Requeue, makeDue) or held (hold); and while an entry waits at a key
// due later, its record is written again only by what moves that key
// (makeDue; a settlement, once the key is due and leased): RetryDead and
// DropDead write records of dead letters, Requeue of entries that wait
// at no retry key (as their record says; in a log written before records,
// one past requeueLook may be queued again: see Requeue), hold of leased
// ones. A record that does not say when its entry is due (none, or
// retrying without next_attempt_at: a log written before records said
// so) leaves the entry to a walk of the retry keys due after now that
// stops once each of them is found, and after [hastenLook] versions of
// keys (deleted ones included): an entry further on keeps its time. The
// entries found are moved by [queue.moveDue], a page of bounded bytes
// per transaction. As Requeue's, the argument holds because records are
// applied in log order (see [DB.halt]).
func (q *queue) Hasten(ctx context.Context, seqs []uint64) (int, error) {
	if err := q.l.checkOpen(); err != nil {
		return 0, err
	}
	if err := q.l.space.check(); err != nil {
		return 0, err
	}
	seqs = slices.Compact(slices.Sorted(slices.Values(seqs)))
	q.mu.Lock()
	defer q.mu.Unlock()
	txn := q.l.db.NewTransaction(false) // the lookups'; moveDue writes
	defer txn.Discard()
	now := time.Now()
	looked := 0 // keys read: see hastenHook
	defer func() {
		if hastenHook != nil {
			hastenHook(looked)
		}
	}()
	var found []dueEntry
	var unknown map[uint64]*logpb.Delivery // asked entries whose record does not say when they are due
	for _, seq := range seqs {
		if q.leasedOrReady(seq) {
			continue
		}
		looked++
		d, err := getDelivery(txn, seq, q.sink)
		if err != nil {
			return 0, fmt.Errorf("hasten %s entry %d: %w", q.sink, seq, err)
		}
		due := d.GetNextAttemptUnixNano()
		if d == nil || (due == 0 && d.GetState() == logpb.Delivery_RETRYING) {
			if unknown == nil {
				unknown = map[uint64]*logpb.Delivery{}
			}
			unknown[seq] = d
			continue
		}
		if due <= now.UnixNano() {
			continue // due already (or not retrying, or held: its key is at heldAt)
		}
		key := retryKey(q.sink, time.Unix(0, due), seq)
		looked++
		if _, err := txn.Get(key); errors.Is(err, badger.ErrKeyNotFound) {
			continue // held since (its record keeps the due time it had)
		} else if err != nil {
			return 0, fmt.Errorf("hasten %s entry %d: %w", q.sink, seq, err)
		}
		found = append(found, dueEntry{key: key, seq: seq, d: d})
	}
	if len(unknown) > 0 {
		more, n := q.lookForRetries(txn, unknown, retryKey(q.sink, now.Add(time.Nanosecond), 0), hastenLook)
		looked += n
		found = append(found, more...)
	}
	txn.Discard()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := q.moveDue(ctx, found, now)
	if n > 0 {
		q.wake()
	}
	return n, err
}

// leasedOrReady reports whether the entry of seq is leased or ready, as
// memory knows: then it waits at no retry key. q.mu is held.
func (q *queue) leasedOrReady(seq uint64) bool {
	if _, leased := q.leases[seq]; leased {
		return true
	}
	q.pmu.Lock()
	defer q.pmu.Unlock()
	return q.pending.has(seq)
}

// dueEntry is a retry entry Hasten makes due: its key, its seq, and its
// delivery record (nil: none).
type dueEntry struct {
	key []byte
	seq uint64
	d   *logpb.Delivery
}

// moveDue makes the entries found due at now, in as many transactions as
// they need, and returns how many it moved: a page of them ends once the
// values it writes again reach [hastenBytes], and before Badger's own
// bound on a transaction (15% of the memtable: a thousand parked entries
// of 3 KB transform outputs failed whole): a page that does not fit is
// made again with the entries that did, as HastenRetries' is. Between
// pages it stops when ctx ends. q.mu is held, so no other write moves the
// entries meanwhile.
func (q *queue) moveDue(ctx context.Context, found []dueEntry, now time.Time) (int, error) {
	moved := 0
	for len(found) > 0 {
		if moved > 0 {
			if err := ctx.Err(); err != nil {
				return moved, err
			}
		}
		n, err := q.movePage(found, len(found), now)
		if err != nil && errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
			n, err = q.movePage(found, n, now) // nothing was written: the same page, shorter
		}
		if err != nil {
			return moved, fmt.Errorf("hasten %s: %w", q.sink, err)
		}
		moved, found = moved+n, found[n:]
	}
	return moved, nil
}

// movePage makes up to max of the entries found due at now in one
// transaction, ending it once their values reach hastenBytes, and commits
// it. It returns how many it moved; on an error before the commit nothing
// is written, and it returns how many entries were written into the
// transaction before it (ErrTxnTooBig: those fit). q.mu is held.
func (q *queue) movePage(found []dueEntry, max int, now time.Time) (int, error) {
	txn := q.l.newTxn()
	defer txn.Discard()
	n, size := 0, 0
	for _, f := range found[:max] {
		if size >= hastenBytes {
			break
		}
		item, err := txn.Get(f.key)
		if err != nil {
			return n, fmt.Errorf("entry %d: %w", f.seq, err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return n, fmt.Errorf("entry %d: %w", f.seq, err)
		}
		if err := q.makeDueWith(txn, f.key, v, f.seq, f.d, now); err != nil {
			return n, err
		}
		n, size = n+1, size+len(v)
	}
	if err := q.l.commit(txn); err != nil {
		return 0, err
	}
	return n, nil
}

// hastenLook bounds the versions of retry keys (deleted ones included:
// see nextRetryWalk) that one Hasten goes through to find the entries
// whose delivery record does not say when they are due.
var hastenLook = nextRetryWalk // a var: a test may lower it

// hastenHook, when set (by tests only), is called at the end of each
// Hasten with how many keys it read: delivery records and retry keys
// looked up, and versions of retry keys walked.
var hastenHook func(looked int)

// lookForRetries walks the retry keys from the key from on (Hasten: the
// first due after now; Requeue: the first), and returns those of the
// entries unknown (seq → delivery record), stopping once it found them
// all, at the held keys (which sort last), or after look versions of keys;
// and how many versions it went through. q.mu is held.
func (q *queue) lookForRetries(txn *badger.Txn, unknown map[uint64]*logpb.Delivery, from []byte, look int) ([]dueEntry, int) {
	var found []dueEntry
	seen, _ := q.walkRetries(txn, from, look, func(item *badger.Item, _, seq uint64) bool {
		if d, asked := unknown[seq]; asked {
			found = append(found, dueEntry{key: item.KeyCopy(nil), seq: seq, d: d})
		}
		return len(found) < len(unknown)
	})
	return found, seen
}

// makeDue writes the retry entry key, whose value is val, of seq again
// due at now, and says so in its delivery record's next_attempt_at (of a
// retry, and of an event the sink did not attempt, still queued), in txn.
func (q *queue) makeDue(txn *wtxn, key, val []byte, seq uint64, now time.Time) error {
	d, err := getDelivery(txn.Txn, seq, q.sink)
	if err != nil {
		return fmt.Errorf("hasten %s entry %d: %w", q.sink, seq, err)
	}
	return q.makeDueWith(txn, key, val, seq, d, now)
}

// makeDueWith is makeDue with the delivery record d of seq read already
// (nil: none); it may change d.
func (q *queue) makeDueWith(txn *wtxn, key, val []byte, seq uint64, d *logpb.Delivery, now time.Time) error {
	if err := txn.Delete(key); err != nil {
		return q.l.writeErr(err)
	}
	if err := txn.Set(retryKey(q.sink, now, seq), val); err != nil {
		return q.l.writeErr(err)
	}
	if d != nil && (d.State == logpb.Delivery_RETRYING || d.NextAttemptUnixNano != 0) {
		d.NextAttemptUnixNano = now.UnixNano()
		if err := txn.putDelivery(seq, q.sink, d); err != nil {
			return q.l.writeErr(err)
		}
	}
	return nil
}
