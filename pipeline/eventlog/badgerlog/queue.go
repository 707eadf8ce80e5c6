package badgerlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// queue is one sink's queue. Its ready entries, leases and cursor live in
// memory (see pending.go): after a restart every unsettled entry is ready
// again. Retry and dead-letter entries are Badger keys.
type queue struct {
	l    *DB
	sink string

	ready, retry, dead []byte // key prefixes; ready keys only in logs written before routes

	signal chan struct{} // capacity 1: something was appended

	mu         sync.Mutex
	leases     map[uint64]lease // fetched, not yet settled
	ackTop     uint64           // the last seq of the sink's last Acks (acks.go)
	ackTopRead bool             // ackTop was read from the log
	// noRetries: a scan found no retry entry of the sink but held ones,
	// and no commit wrote one since (DB.retryWrites was noRetriesAt): scans
	// skip the retry keys, and read Badger only for events the recent cache
	// lacks.
	noRetries   bool
	noRetriesAt uint64

	pmu     sync.Mutex // a leaf: see pending
	pending pending
}

// lease remembers where a fetched entry came from and what it holds.
type lease struct {
	key    []byte // its r/ key, or the q/ key of a ready entry written before routes; nil for the others
	ready  bool   // it was ready (queued since Append), not a retry
	target *logpb.Target
}

var _ pipeline.Queue = (*queue)(nil)

func newQueue(l *DB, sink string) *queue {
	return &queue{
		l:      l,
		sink:   sink,
		ready:  sinkPrefix(preReady, sink),
		retry:  sinkPrefix(preRetry, sink),
		dead:   sinkPrefix(preDead, sink),
		signal: make(chan struct{}, 1),
		leases: map[uint64]lease{},
	}
}

func (q *queue) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// Fetch implements [pipeline.Queue].
func (q *queue) Fetch(ctx context.Context, max int) ([]pipeline.Delivery, error) {
	if max <= 0 {
		max = 1
	}
	if err := q.l.waitQueues(ctx); err != nil {
		return nil, err
	}
	for {
		if err := q.l.checkOpen(); err != nil {
			return nil, err
		}
		if err := q.l.HaltErr(); err != nil { // what it hands out could not be settled
			return nil, err
		}
		out, nextDue, err := q.scan(max, time.Now())
		if err != nil || len(out) > 0 {
			return out, err
		}
		if err := q.wait(ctx, nextDue); err != nil {
			return nil, err
		}
	}
}

// wait returns when something was appended, when nextDue (if set) comes
// or the log halts, or with an error when ctx ends or the log closes.
func (q *queue) wait(ctx context.Context, nextDue time.Time) error {
	var timer <-chan time.Time
	if !nextDue.IsZero() {
		t := time.NewTimer(time.Until(nextDue))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-q.signal:
	case <-timer:
	case <-q.l.closed:
		return pipeline.ErrClosed
	case <-q.l.halted:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// scan collects up to max ready entries: due retries first, then the
// oldest ready entries. It also returns when the earliest retry that is
// not yet due becomes due (zero if none).
func (q *queue) scan(max int, now time.Time) (out []pipeline.Delivery, nextDue time.Time, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	// Read before the snapshot: a retry entry committed after it counts
	// after the commit, so that it moves retryWrites past gen.
	gen := q.l.retryWrites.Load()
	view := lazyView{db: q.l.db}
	defer view.Discard()
	txn := view.Txn
	taken := 0 // ready entries taken from pending
	if !q.noRetries || q.noRetriesAt != gen {
		out, nextDue, err = q.scanRetries(txn, max, now)
		if err == nil {
			// Held entries (order.go) are never due: Release writes a
			// retry entry for each.
			none := len(out) == 0 && (nextDue.IsZero() || nextDue.Equal(heldAt)) && !q.leasedRetries()
			q.noRetries, q.noRetriesAt = none, gen
		}
	}
	if err == nil && len(out) < max {
		out, taken, err = q.takeReady(txn, max, out)
	}
	if err != nil {
		// Leases taken in a failed scan are dropped and the ready entries
		// go back: nothing was handed out.
		for _, d := range out {
			delete(q.leases, d.Seq)
		}
		q.pmu.Lock()
		q.pending.untake(taken)
		q.pmu.Unlock()
		return nil, time.Time{}, fmt.Errorf("read queue %s: %w", q.sink, err)
	}
	return out, nextDue, nil
}

// scanRetries collects up to max due retry entries, and when the earliest
// one not yet due becomes due (zero if none). q.mu is held.
func (q *queue) scanRetries(txn func() *badger.Txn, max int, now time.Time) (out []pipeline.Delivery, nextDue time.Time, err error) {
	it := txn().NewIterator(badger.IteratorOptions{Prefix: q.retry, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Seek(q.retry); it.ValidForPrefix(q.retry) && len(out) < max; it.Next() {
		key := it.Item().Key()
		rest := key[len(q.retry):]
		if len(rest) != 16 {
			continue
		}
		due := time.Unix(0, int64(binary.BigEndian.Uint64(rest[:8])))
		seq := binary.BigEndian.Uint64(rest[8:])
		if _, leased := q.leases[seq]; leased {
			continue
		}
		if due.After(now) {
			return out, due, nil
		}
		t := &logpb.Target{}
		if err := it.Item().Value(func(v []byte) error { return decode(v, t) }); err != nil {
			return out, time.Time{}, fmt.Errorf("decode queue entry %d: %w", seq, err)
		}
		d, err := q.deliver(txn, seq, lease{key: it.Item().KeyCopy(nil), target: t})
		if err != nil {
			return out, time.Time{}, err
		}
		out = append(out, d)
	}
	return out, time.Time{}, nil
}

// leasedRetries reports whether an entry fetched from a retry key is not
// settled yet. q.mu is held.
func (q *queue) leasedRetries() bool {
	for _, ls := range q.leases {
		if !ls.ready {
			return true
		}
	}
	return false
}

// takeReady appends to out the oldest ready entries, up to max in all,
// and says how many it took from pending. q.mu is held.
func (q *queue) takeReady(txn func() *badger.Txn, max int, out []pipeline.Delivery) ([]pipeline.Delivery, int, error) {
	q.pmu.Lock()
	seqs := q.pending.take(max - len(out))
	var legacy map[uint64]*logpb.Target // entries at ready keys, found only after an upgrade
	if len(q.pending.legacy) > 0 {
		legacy = map[uint64]*logpb.Target{}
		for _, seq := range seqs {
			if t, ok := q.pending.legacy[seq]; ok {
				legacy[seq] = t
			}
		}
	}
	q.pmu.Unlock()
	out = slices.Grow(out, len(seqs)) // a Delivery is ~200 B: grow once
	for _, seq := range seqs {
		ls := lease{ready: true, target: legacy[seq]}
		if ls.target != nil {
			ls.key = readyKey(q.sink, seq)
		}
		d, err := q.deliver(txn, seq, ls)
		if err != nil {
			return out, len(seqs), err
		}
		out = append(out, d)
	}
	return out, len(seqs), nil
}

// deliver builds the Delivery for the entry at seq and leases it as ls;
// a ready entry's target (nil in ls) comes with its event, from the recent
// cache or else read through txn. q.mu is held.
func (q *queue) deliver(txn func() *badger.Txn, seq uint64, ls lease) (pipeline.Delivery, error) {
	ev, routes, ok := q.l.recent.get(seq)
	if ok && ls.target == nil {
		ls.target = routes.target(q.sink)
	}
	if !ok {
		rec, err := q.l.readEvent(txn(), seq)
		if err != nil {
			return pipeline.Delivery{}, fmt.Errorf("event %d of queue entry: %w", seq, err)
		}
		ev = eventFromRecord(rec)
		if ls.target == nil {
			ls.target = routing{rec.GetRoutes(), rec.GetPayloads()}.target(q.sink)
		}
	}
	q.leases[seq] = ls
	t := ls.target
	return pipeline.Delivery{
		Seq:       seq,
		Event:     ev,
		Route:     t.GetRoute(),
		Payload:   t.GetPayload(),
		Attempt:   int(t.GetAttempts()) + 1,
		LastError: t.GetLastError(),
	}, nil
}

// Settle implements [pipeline.Queue].
func (q *queue) Settle(ctx context.Context, settlements []pipeline.Settlement) error {
	return q.settleRelease(ctx, settlements, nil)
}

// settleRelease is Settle that also releases the held entries release
// (see order.go) in the same transaction.
func (q *queue) settleRelease(ctx context.Context, settlements []pipeline.Settlement, release []uint64) error {
	if err := q.l.checkOpen(); err != nil {
		return err
	}
	if err := q.l.space.check(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	txn := q.l.newTxn()
	defer txn.Discard()
	now := time.Now()
	var acked []uint64 // first-attempt acks, written as one Acks (acks.go)
	for _, s := range settlements {
		ls, ok := q.leases[s.Seq]
		if !ok {
			return fmt.Errorf("settle %s entry %d: not fetched, or settled already", q.sink, s.Seq)
		}
		if ls.key != nil {
			if err := txn.Delete(ls.key); err != nil {
				return q.l.writeErr(err)
			}
		}
		if s.Outcome == pipeline.Hold {
			if err := q.hold(txn, s.Seq, ls.ready, ls.target); err != nil {
				return err
			}
			continue
		}
		if ls.ready && ls.key == nil && s.Outcome == pipeline.Ack { // (an entry at a ready key keeps its route in a record)
			if err := q.loadAckTop(txn.Txn); err != nil {
				return fmt.Errorf("settle %s entry %d: %w", q.sink, s.Seq, err)
			}
			if s.Seq > q.ackTop {
				acked = append(acked, s.Seq)
				continue
			}
		}
		// A ready entry has never been settled, retried or replayed: it
		// has no record yet, and the first attempt (most of them) skips
		// the lookup.
		var prev *logpb.Delivery
		if !ls.ready {
			var err error
			if prev, err = getDelivery(txn.Txn, s.Seq, q.sink); err != nil {
				return fmt.Errorf("settle %s entry %d: %w", q.sink, s.Seq, err)
			}
		}
		if err := q.putSettled(txn, prev, ls.target, s, now); err != nil {
			return err
		}
	}
	if len(acked) > 0 {
		slices.Sort(acked)
		acked = slices.Compact(acked)
		v, err := encodeAcks(acked, now.UnixNano())
		if err != nil {
			return err
		}
		if err := txn.Set(acksKey(q.sink, acked[len(acked)-1]), v); err != nil {
			return q.l.writeErr(err)
		}
	}
	released, err := q.releaseIn(txn, release, now)
	if err != nil {
		return err
	}
	if len(acked) > 0 {
		// Before the commit, whatever it returns: a commit that fails after
		// its record reached the write-ahead log is applied at the next
		// start, and the next Acks must not overlap it. A top too high only
		// gives later acks records of their own.
		q.ackTop = acked[len(acked)-1]
	}
	if err := q.l.commit(txn); err != nil {
		return err
	}
	q.pmu.Lock()
	for _, s := range settlements {
		if q.leases[s.Seq].ready {
			q.pending.settle(s.Seq)
		}
		delete(q.leases, s.Seq)
	}
	q.pmu.Unlock()
	if released > 0 {
		q.wake()
	}
	return nil
}

// Stats implements [pipeline.Queue]. Ready entries (leased ones included)
// are counted in memory; retrying and dead entries key by key, so Stats
// costs time in proportion to those.
func (q *queue) Stats(ctx context.Context) (pipeline.QueueStats, error) {
	if err := q.l.waitQueues(ctx); err != nil {
		return pipeline.QueueStats{}, err
	}
	txn, ready, _ := q.snapshot()
	defer txn.Discard()
	return pipeline.QueueStats{
		Ready:    ready,
		Retrying: countFrom(txn, q.retry, q.retry),
		Dead:     countFrom(txn, q.dead, q.dead),
	}, nil
}

// CountWaiting implements dispatch.WaitingCounter: Stats' ready count,
// and the retry keys counted up to maxRetrying, not walked whole (nor the
// dead letters).
func (q *queue) CountWaiting(ctx context.Context, maxRetrying int) (ready, retrying int, err error) {
	if err := q.l.waitQueues(ctx); err != nil {
		return 0, 0, err
	}
	txn, ready, _ := q.snapshot()
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry})
	defer it.Close()
	for it.Seek(q.retry); it.ValidForPrefix(q.retry) && retrying < maxRetrying; it.Next() {
		retrying++
	}
	return ready, retrying, nil
}

// snapshot returns a read transaction of the log as it is now, with what
// of the queue's memory goes with it: how many entries are queued (ready
// or leased) and the lowest of them (0 if none). q.mu is held only while
// they are taken, not while the caller walks keys: Stats and Oldest walk
// every retry and dead key, millions after a long outage, and the sink's
// Fetch and Settle would wait for as long. Settle commits and then takes
// its entries out of the queue under q.mu, so the transaction sees
// exactly the settlements the queue reflects. The caller discards txn.
func (q *queue) snapshot() (txn *badger.Txn, queued int, lowest uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	txn = q.l.db.NewTransaction(false)
	q.pmu.Lock()
	defer q.pmu.Unlock()
	lowest, _ = q.pending.lowest()
	return txn, q.pending.len(), lowest
}

// walkHook, when set (by tests only), is called before Stats and Oldest
// walk the keys of a prefix.
var walkHook func()

// countFrom counts the keys under prefix from start on.
func countFrom(txn *badger.Txn, prefix, start []byte) int {
	if walkHook != nil {
		walkHook()
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	n := 0
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		n++
	}
	return n
}

// DeadLetters implements [pipeline.Queue]. A limit less than 1 lists
// nothing.
func (q *queue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	if err := q.l.checkOpen(); err != nil {
		return nil, err
	}
	if after == math.MaxUint64 {
		return nil, nil // nothing comes after; seeking after+1 would wrap to the first
	}
	var out []pipeline.DeadLetter
	err := q.l.db.View(func(txn *badger.Txn) error {
		// Prefetch no more than the page: a dead letter's value holds its
		// payload (up to 1 MiB), and 64 of them were read ahead for a
		// page of one.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: q.dead, PrefetchValues: true, PrefetchSize: max(1, min(limit, 64))})
		defer it.Close()
		for it.Seek(binary.BigEndian.AppendUint64(append([]byte(nil), q.dead...), after+1)); it.ValidForPrefix(q.dead) && len(out) < limit; it.Next() {
			key := it.Item().Key()
			if len(key) != len(q.dead)+8 {
				continue
			}
			seq := binary.BigEndian.Uint64(key[len(q.dead):])
			t := &logpb.Target{}
			if err := it.Item().Value(func(v []byte) error { return decode(v, t) }); err != nil {
				return fmt.Errorf("decode dead letter %d: %w", seq, err)
			}
			rec, err := q.l.readEvent(txn, seq)
			if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			dl := pipeline.DeadLetter{
				Seq:      seq,
				Route:    t.GetRoute(),
				Payload:  t.GetPayload(),
				Attempts: int(t.GetAttempts()),
				Err:      t.GetLastError(),
				FailedAt: time.Unix(0, t.GetFailedAtUnixNano()).UTC(),
			}
			if rec != nil {
				dl.Event = eventFromRecord(rec)
			}
			out = append(out, dl)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters of %s: %w", q.sink, err)
	}
	return out, nil
}

// putSettled writes in txn what settlement s leaves of the entry whose
// target is t and whose delivery record was prev (nil: none yet): the
// record, and for a retry or a dead letter the entry under its new key,
// with the attempt counted (unless s.NotAttempted) and s's error. Settle
// and Abandon write through it.
func (q *queue) putSettled(txn *wtxn, prev *logpb.Delivery, t *logpb.Target, s pipeline.Settlement, now time.Time) error {
	if s.Outcome == pipeline.Retry && s.RetryAt.IsZero() {
		// Due at once, as the other logs take it: the zero time's
		// nanoseconds overflow to a key that sorts after the held
		// entries', where no Fetch, walk or Hasten looks.
		s.RetryAt = now
	}
	if err := txn.putDelivery(s.Seq, q.sink, settled(prev, t.GetRoute(), s, now)); err != nil {
		return q.l.writeErr(err)
	}
	next := &logpb.Target{Route: t.GetRoute(), Payload: t.GetPayload(), Attempts: t.GetAttempts() + 1, LastError: s.Err}
	var key []byte
	switch s.Outcome {
	case pipeline.Ack:
		return nil
	case pipeline.Retry:
		if s.NotAttempted {
			next.Attempts, next.LastError = t.GetAttempts(), t.GetLastError()
		}
		key = retryKey(q.sink, s.RetryAt, s.Seq)
	case pipeline.Dead:
		if s.NotAttempted {
			next.Attempts-- // the one this settlement counted
		}
		next.FailedAtUnixNano = now.UnixNano()
		key = deadKey(q.sink, s.Seq)
	default:
		return fmt.Errorf("settle %s entry %d: unknown outcome %d", q.sink, s.Seq, s.Outcome)
	}
	v, err := targetUTF8.encoded(next.MarshalVT())
	if err != nil {
		return fmt.Errorf("encode queue entry: %w", err)
	}
	if err := txn.Set(key, v); err != nil {
		return q.l.writeErr(err)
	}
	return nil
}
