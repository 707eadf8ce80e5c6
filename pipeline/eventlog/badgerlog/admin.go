package badgerlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// What the admin API needs from the log: listing events, settling dead
// letters by hand and replaying events into a queue.

const (
	// defaultLimit is the page size of Events when the filter has none.
	defaultLimit = 100
	// scanBudget bounds the events one Events call decodes, so that a
	// selective filter over a long log answers in bounded time.
	scanBudget = 10000
	// deadBatch bounds the dead letters moved or dropped in one
	// transaction (and deadBytes what they hold).
	deadBatch = 1000
)

// deadBytes bounds what the dead letters of one transaction of eachDead
// hold of payloads and errors (a transform's output can be 1 MiB): a
// thousand such would hold a gigabyte, in memory and in one record of
// the write-ahead log. A var: a test lowers it.
var deadBytes = 32 << 20

var _ pipeline.NewestFirstLog = (*DB)(nil)

// Events implements [pipeline.Log]. Its cursor is the decimal Seq of the
// last event it looked at.
func (l *DB) Events(ctx context.Context, f pipeline.EventFilter) ([]pipeline.EventInfo, string, error) {
	return l.events(ctx, f, false)
}

// EventsNewestFirst implements [pipeline.NewestFirstLog]. Its cursor is the
// decimal Seq of the last event it looked at: the next call starts below it.
func (l *DB) EventsNewestFirst(ctx context.Context, f pipeline.EventFilter) ([]pipeline.EventInfo, string, error) {
	return l.events(ctx, f, true)
}

// events lists in log order, or newest first when reverse.
func (l *DB) events(ctx context.Context, f pipeline.EventFilter, reverse bool) ([]pipeline.EventInfo, string, error) {
	if err := l.checkOpen(); err != nil {
		return nil, "", err
	}
	if !pipeline.ValidFilterState(f.State) {
		return nil, "", fmt.Errorf("events: state %q: want queued, retrying, pending, delivered, dead or dropped", f.State)
	}
	after := uint64(0)
	if f.After != "" {
		n, err := strconv.ParseUint(f.After, 10, 64)
		if err != nil {
			return nil, "", fmt.Errorf("events: after %q: %w", f.After, pipeline.ErrBadCursor)
		}
		after = n
	}
	if reverse && f.After == "" {
		after = math.MaxUint64 // newest first: below the greatest seq there can be
	}
	if !reverse && after == math.MaxUint64 {
		return nil, "", nil // nothing comes after; seeking after+1 would wrap to the first
	}
	if reverse && after == 0 {
		return nil, "", nil // nothing comes before the first
	}
	// in reports whether seq is on the side of the cursor this call lists.
	in := func(seq uint64) bool {
		if reverse {
			return seq < after || (f.After == "" && seq == after)
		}
		return seq > after
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	var out []pipeline.EventInfo
	next := ""
	err := l.db.View(func(txn *badger.Txn) error {
		if f.ID != "" {
			seq, err := lookup(ctx, txn, f.ID)
			if errors.Is(err, badger.ErrKeyNotFound) || (err == nil && !in(seq)) {
				return nil
			}
			if err != nil {
				return err
			}
			rec, err := l.readEvent(txn, seq)
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if !matches(rec, f) {
				return nil
			}
			if ok, err := matchState(txn, rec, seq, f.Sink, f.State); err != nil || !ok {
				return err
			}
			out = append(out, eventInfo(rec, seq))
			return nil
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: preEvent, PrefetchValues: true, PrefetchSize: 64, Reverse: reverse})
		defer it.Close()
		scanned := 0
		start := eventKey(after + 1)
		if reverse {
			// A reverse iterator seeks to the greatest key <= start.
			start = eventKey(after)
			if f.After != "" {
				start = eventKey(after - 1)
			}
		}
		for it.Seek(start); it.ValidForPrefix(preEvent); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := it.Item().Key()
			if len(key) != len(preEvent)+8 {
				continue
			}
			seq := binary.BigEndian.Uint64(key[len(preEvent):])
			if scanned == scanBudget || len(out) == limit {
				// More may match: the caller continues after the last one looked at.
				next = strconv.FormatUint(seq-1, 10)
				if reverse {
					next = strconv.FormatUint(seq+1, 10)
				}
				return nil
			}
			scanned++
			rec := &logpb.Event{}
			if err := it.Item().Value(func(v []byte) error { return decode(v, rec) }); err != nil {
				return fmt.Errorf("decode event %d: %w", seq, err)
			}
			ok := matches(rec, f)
			if ok {
				var err error
				if ok, err = matchState(txn, rec, seq, f.Sink, f.State); err != nil {
					return err
				}
			}
			if ok {
				full, err := l.full(rec, seq)
				if err != nil {
					return err
				}
				out = append(out, eventInfo(full, seq))
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list events: %w", err)
	}
	return out, next, nil
}

func matches(rec *logpb.Event, f pipeline.EventFilter) bool {
	at := time.Unix(0, rec.GetReceivedAtUnixNano())
	switch {
	case f.ID != "" && rec.GetId() != f.ID,
		f.Source != "" && rec.GetSource() != f.Source,
		f.DedupKey != "" && rec.GetDedupKey() != f.DedupKey,
		f.Sink != "" && !slices.Contains(rec.GetSinks(), f.Sink),
		!f.Since.IsZero() && at.Before(f.Since),
		!f.Until.IsZero() && !at.Before(f.Until):
		return false
	}
	return true
}

func eventInfo(rec *logpb.Event, seq uint64) pipeline.EventInfo {
	return pipeline.EventInfo{Event: eventFromRecord(rec), Seq: seq, Sinks: slices.Clone(rec.GetSinks())}
}

// RetryDead implements [pipeline.Queue].
func (q *queue) RetryDead(ctx context.Context, seqs []uint64) (int, error) {
	now := time.Now()
	n, err := q.eachDead(ctx, seqs, func(txn *wtxn, seq uint64, t *logpb.Target) error {
		r := &logpb.Target{Route: t.GetRoute(), Payload: t.GetPayload(), LastError: t.GetLastError()}
		v, err := targetUTF8.encoded(r.MarshalVT())
		if err != nil {
			return fmt.Errorf("encode queue entry: %w", err)
		}
		if err := txn.Set(retryKey(q.sink, now, seq), v); err != nil {
			return err
		}
		return q.mark(txn, seq, t.GetRoute(), logpb.Delivery_RETRYING, now, t.GetLastError())
	})
	if n > 0 {
		q.wake()
	}
	if err != nil {
		return n, fmt.Errorf("retry dead letters of %s: %w", q.sink, err)
	}
	return n, nil
}

// DropDead implements [pipeline.Queue]. Each dead letter's delivery record
// says dropped, and when, in the transaction that deletes it.
func (q *queue) DropDead(ctx context.Context, seqs []uint64) (int, error) {
	return q.dropDead(ctx, seqs, nil)
}

// DropDeadSeqs implements [pipeline.Holder]: the seqs are those whose
// dead-letter keys the committed transactions deleted, read in them under
// q.mu, which RetryDead holds too.
func (q *queue) DropDeadSeqs(ctx context.Context, seqs []uint64) ([]uint64, error) {
	if seqs == nil {
		return nil, nil
	}
	var dropped []uint64
	_, err := q.dropDead(ctx, seqs, func(seq uint64) { dropped = append(dropped, seq) })
	return dropped, err
}

// dropDead is DropDead that calls done (if not nil) for the seq of each
// dead letter dropped, once its transaction is committed.
func (q *queue) dropDead(ctx context.Context, seqs []uint64, done func(uint64)) (int, error) {
	now := time.Now()
	n, err := q.eachDeadThen(ctx, seqs, func(txn *wtxn, seq uint64, t *logpb.Target) error {
		return q.markDropped(txn, seq, t, now)
	}, done)
	if err != nil {
		return n, fmt.Errorf("drop dead letters of %s: %w", q.sink, err)
	}
	return n, nil
}

// eachDead deletes the dead letters with seqs (nil: all), calling also (if
// not nil) for each in the same transaction, deadBatch entries per
// transaction. It returns how many it deleted.
func (q *queue) eachDead(ctx context.Context, seqs []uint64, also func(*wtxn, uint64, *logpb.Target) error) (int, error) {
	return q.eachDeadThen(ctx, seqs, also, nil)
}

// eachDeadThen is eachDead that calls done (if not nil), in increasing
// order, for the seq of each dead letter deleted, once its transaction
// is committed.
func (q *queue) eachDeadThen(ctx context.Context, seqs []uint64, also func(*wtxn, uint64, *logpb.Target) error, done func(uint64)) (int, error) {
	if err := q.l.checkOpen(); err != nil {
		return 0, err
	}
	if seqs != nil {
		seqs = slices.Compact(slices.Sorted(slices.Values(seqs)))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	total := 0
	after := uint64(0) // with seqs == nil: the last seq handled
	for i := 0; ; {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		if err := q.l.space.check(); err != nil {
			return total, err
		}
		txn := q.l.newTxn()
		var keys [][]byte
		var vals []*logpb.Target
		size := 0 // of vals' payloads and errors
		full := func() bool { return len(keys) >= deadBatch || size >= deadBytes }
		add := func(key []byte, t *logpb.Target) {
			keys, vals = append(keys, key), append(vals, t)
			size += len(t.GetPayload()) + len(t.GetLastError())
		}
		var err error
		if seqs == nil {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: q.dead, PrefetchValues: true, PrefetchSize: 64})
			for it.Seek(deadKey(q.sink, after+1)); it.ValidForPrefix(q.dead) && !full(); it.Next() {
				t := &logpb.Target{}
				if err = it.Item().Value(func(v []byte) error { return decode(v, t) }); err != nil {
					break
				}
				add(it.Item().KeyCopy(nil), t)
			}
			it.Close()
		} else {
			for end := min(i+deadBatch, len(seqs)); i < end && !full(); i++ {
				item, gerr := txn.Get(deadKey(q.sink, seqs[i]))
				if errors.Is(gerr, badger.ErrKeyNotFound) {
					continue
				}
				if gerr != nil {
					err = gerr
					break
				}
				t := &logpb.Target{}
				if err = item.Value(func(v []byte) error { return decode(v, t) }); err != nil {
					break
				}
				add(item.KeyCopy(nil), t)
			}
		}
		cut := false // the transaction ended before Badger's bound, not deadBytes'
		if err == nil {
			var done int
			done, err = q.settleDead(txn, keys, vals, also)
			if errors.Is(err, badger.ErrTxnTooBig) && done > 0 {
				// Badger's bound on one transaction (15% of the memtable,
				// 2.4 MiB by default) counts payloads under its value
				// threshold (1 MiB) whole, and comes before deadBytes: the
				// dead letters that fit go in a transaction of their own,
				// the rest in the next.
				txn.Discard()
				txn = q.l.newTxn()
				keys, vals, cut = keys[:done], vals[:done], true
				_, err = q.settleDead(txn, keys, vals, also)
			} else if errors.Is(err, badger.ErrTxnTooBig) && len(keys) > 0 {
				// One entry alone: valueThreshold leaves it half the bound
				// for its other writes, so this is not expected; say which.
				err = fmt.Errorf("dead letter %d alone does not fit in one transaction (raise [log] memtable_size): %w",
					binary.BigEndian.Uint64(keys[0][len(q.dead):]), err)
			}
		}
		if err == nil && len(keys) > 0 {
			err = q.l.commit(txn)
		}
		txn.Discard()
		if err != nil {
			return total, err
		}
		total += len(keys)
		if done != nil {
			for _, key := range keys {
				done(binary.BigEndian.Uint64(key[len(q.dead):]))
			}
		}
		if len(keys) > 0 {
			after = binary.BigEndian.Uint64(keys[len(keys)-1][len(q.dead):])
		}
		if cut && seqs != nil {
			// Go on from the first seq not settled.
			i, _ = slices.BinarySearch(seqs, after+1)
		}
		if !cut && ((seqs == nil && !full()) || (seqs != nil && i >= len(seqs))) {
			return total, nil
		}
	}
}

// settleDead deletes the dead letters keys (whose targets are vals) in
// txn, calling also (if not nil) for each, and returns how many it wrote
// before an error.
func (q *queue) settleDead(txn *wtxn, keys [][]byte, vals []*logpb.Target, also func(*wtxn, uint64, *logpb.Target) error) (int, error) {
	for k, key := range keys {
		seq := binary.BigEndian.Uint64(key[len(q.dead):])
		if err := txn.Delete(key); err != nil {
			return k, q.l.writeErr(err)
		}
		if also != nil {
			if err := also(txn, seq, vals[k]); err != nil {
				return k, q.l.writeErr(err)
			}
		}
	}
	return len(keys), nil
}

// Requeue implements [pipeline.Queue]. The entries go to the retry keyspace
// due now, which Fetch reads before the ready entries from its cursor on.
//
// It runs under q.mu at a cost bounded by rs, not by the queue (P9: a
// sink in a day-long outage has millions of retry keys, and its Fetch and
// Settle wait on q.mu meanwhile). A leased or ready entry is known in
// memory; whether any other waits at a retry key is told by its delivery
// record's state, read with one point lookup, not by a walk of the sink's
// retry keys. The state is exact because every writer of a retry key
// writes or keeps a queued or retrying record in the same transaction (so
// in the same write-ahead log record, replayed whole after a crash): a
// Retry settlement (putSettled) writes retrying, or when not attempted
// keeps the state the entry had (queued when it had no record); RetryDead
// writes retrying, Requeue queued, hold queued for an entry never
// attempted and keeps the record of one fetched from a retry key; Release
// and makeDue move a key and keep the record (makeDue with its new due
// time). And every end of a retry key that writes no other writes the
// record delivered or dead (a settlement, Abandon); DropDead then writes
// dropped. The due time in the record (next_attempt_at) would not do:
// Release (the dispatcher's, per entry of an order key, where a record
// write per entry is not to be paid) leaves the record's time as it was,
// and Requeue writes a key due now with a record of no time. An event
// with no record at the sink is queued when its record routes it there
// (an Append committed and not yet queued in memory); otherwise, when the
// event has routes, it was
// appended by a build that writes a record with every retry key, so it
// waits at none. Left are events without routes and without a record (a
// log written before delivery records, 2026-12-05, or an event routed
// nowhere): a held key is looked up, then one walk of the sink's retry
// keys from the first goes through [requeueLook] versions of keys at most
// (deleted ones included) and stops once it found them all; such an entry
// further on is queued again (a second entry: delivered twice, at least
// once; sinks are idempotent by id, P3).
//
// The argument holds because the records are applied in log order: a
// record Badger refused halts the log before any later record is applied
// (see [DB.halt]), and the next Open applies it first.
func (q *queue) Requeue(ctx context.Context, rs []pipeline.Requeue) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := q.l.waitQueues(ctx); err != nil {
		return 0, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.l.refMu.Lock()
	defer q.l.refMu.Unlock()
	if err := q.l.space.check(); err != nil {
		return 0, err
	}
	txn := q.l.newTxn()
	defer txn.Discard()
	looked := 0 // keys read: see requeueHook
	defer func() {
		if requeueHook != nil {
			requeueHook(looked)
		}
	}()

	// Which of rs have an entry in the queue (waits), first for all of
	// them: a seq not in the log fails the call before anything is written.
	waits := make(map[uint64]bool, len(rs))
	var unknown map[uint64]*logpb.Delivery // no route, no record: see above
	for _, r := range rs {
		looked++
		item, err := txn.Get(eventKey(r.Seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return 0, fmt.Errorf("requeue %s: event seq %d: %w", q.sink, r.Seq, pipeline.ErrNotFound)
		} else if err != nil {
			return 0, fmt.Errorf("requeue %s: %w", q.sink, err)
		}
		if _, done := waits[r.Seq]; done {
			continue
		}
		w, look, n, err := q.requeueWaits(txn, item, r.Seq)
		looked += n
		if err != nil {
			return 0, fmt.Errorf("requeue %s: %w", q.sink, err)
		}
		waits[r.Seq] = w
		if look {
			if unknown == nil {
				unknown = map[uint64]*logpb.Delivery{}
			}
			unknown[r.Seq] = nil
		}
	}
	if len(unknown) > 0 {
		found, n := q.lookForRetries(txn.Txn, unknown, q.retry, requeueLook)
		looked += n
		for _, f := range found {
			waits[f.seq] = true
		}
	}

	now := time.Now()
	n := 0
	for i, r := range rs {
		rs[i].Dead = false
		if waits[r.Seq] {
			continue
		}
		looked++
		if has, err := exists(txn.Txn, deadKey(q.sink, r.Seq)); err != nil || has {
			if err != nil {
				return 0, fmt.Errorf("requeue %s: %w", q.sink, err)
			}
			rs[i].Dead = true
			continue
		}
		v, err := targetUTF8.encoded((&logpb.Target{Route: r.Route, Payload: r.Payload}).MarshalVT())
		if err != nil {
			return 0, fmt.Errorf("encode queue entry: %w", err)
		}
		if err := txn.Set(retryKey(q.sink, now, r.Seq), v); err != nil {
			return 0, q.l.writeErr(err)
		}
		if err := q.mark(txn, r.Seq, r.Route, logpb.Delivery_QUEUED, time.Time{}, ""); err != nil {
			return 0, q.l.writeErr(err)
		}
		waits[r.Seq] = true
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if err := q.l.commit(txn); err != nil {
		return 0, err
	}
	q.wake()
	return n, nil
}

// requeueWaits tells whether the entry of seq, whose event is item, has
// an entry in the queue other than a dead letter (see Requeue): leased,
// ready, or waiting at a retry key as its delivery record says; look when
// that is not known yet (no record and no route: its retry keys are to be
// looked for); and how many keys it read. q.mu is held.
func (q *queue) requeueWaits(txn *wtxn, item *badger.Item, seq uint64) (waits, look bool, looked int, err error) {
	if q.leasedOrReady(seq) {
		return true, false, 0, nil
	}
	looked++
	d, err := getDelivery(txn.Txn, seq, q.sink)
	if err != nil {
		return false, false, looked, err
	}
	if d != nil {
		st := d.GetState()
		return st == logpb.Delivery_QUEUED || st == logpb.Delivery_RETRYING, false, looked, nil
	}
	rec := &logpb.Event{}
	if err := item.Value(func(v []byte) error { return decode(v, rec) }); err != nil {
		return false, false, looked, fmt.Errorf("decode event %d: %w", seq, err)
	}
	if _, routed := routeTo(rec, q.sink); routed {
		// An Append that has committed and not yet queued the event in
		// memory: the log says it is queued (see pending.go).
		return true, false, looked, nil
	}
	if len(rec.GetRoutes()) > 0 {
		return false, false, looked, nil
	}
	looked++
	held, err := exists(txn.Txn, retryKey(q.sink, heldAt, seq))
	if err != nil || held {
		return held, false, looked, err
	}
	return false, true, looked, nil
}

// requeueLook bounds the versions of retry keys (deleted ones included)
// that one Requeue goes through to find the entries of events with no
// route and no delivery record.
var requeueLook = nextRetryWalk // a var: a test may lower it

// requeueHook, when set (by tests only), is called at the end of each
// Requeue with how many keys it read: events, delivery records, held and
// dead-letter keys looked up, and versions of retry keys walked.
var requeueHook func(looked int)

// mark sets the state (and route) of the delivery record of seq in txn,
// and when it is due (zero: not retrying), keeping its history; lastErr,
// when not empty, becomes its last error.
func (q *queue) mark(txn *wtxn, seq uint64, route string, st logpb.Delivery_State, next time.Time, lastErr string) error {
	d, err := getDelivery(txn.Txn, seq, q.sink)
	if err != nil {
		return err
	}
	if d == nil {
		d = &logpb.Delivery{}
	}
	d.Route, d.State, d.NextAttemptUnixNano = route, st, unixNano(next)
	if lastErr != "" {
		d.LastError = lastErr
	}
	return txn.putDelivery(seq, q.sink, d)
}

// markDropped records in txn that the dead letter t of seq was dropped at
// now. A dead letter that Append wrote (its route's transform failed) has
// no record yet: its attempts and error come from t.
func (q *queue) markDropped(txn *wtxn, seq uint64, t *logpb.Target, now time.Time) error {
	d, err := getDelivery(txn.Txn, seq, q.sink)
	if err != nil {
		return err
	}
	if d == nil {
		d = &logpb.Delivery{Route: t.GetRoute(), State: logpb.Delivery_DEAD, Attempts: t.GetAttempts(), LastError: t.GetLastError()}
	}
	return txn.putDelivery(seq, q.sink, deliveryProto(recordOf("", d).Dropped(now)))
}

func exists(txn *badger.Txn, key []byte) (bool, error) {
	_, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Oldest implements [pipeline.Queue]: the lowest queued entry (in
// memory) and every retry key are looked at.
func (q *queue) Oldest(ctx context.Context) (time.Time, error) {
	if err := q.l.waitQueues(ctx); err != nil {
		return time.Time{}, err
	}
	txn, _, oldest := q.snapshot() // q.mu is not held while the retry keys are walked
	defer txn.Discard()
	var at time.Time
	err := func() error {
		if walkHook != nil {
			walkHook()
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry})
		for it.Seek(q.retry); it.ValidForPrefix(q.retry); it.Next() {
			k := it.Item().Key()
			if seq := binary.BigEndian.Uint64(k[len(k)-8:]); oldest == 0 || seq < oldest {
				oldest = seq
			}
		}
		it.Close()
		if oldest == 0 {
			return nil
		}
		rec, err := q.l.readEvent(txn, oldest)
		if err != nil {
			return fmt.Errorf("event %d: %w", oldest, err)
		}
		at = time.Unix(0, rec.GetReceivedAtUnixNano()).UTC()
		return nil
	}()
	if err != nil {
		return time.Time{}, fmt.Errorf("oldest entry of %s: %w", q.sink, err)
	}
	return at, nil
}
