package badgerlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// queue is one sink's queue. Its leases and cursor live in memory: after a
// restart every unsettled entry is ready again.
type queue struct {
	l    *DB
	sink string

	ready, retry, dead []byte // key prefixes

	signal chan struct{} // capacity 1: something was appended

	mu     sync.Mutex
	cursor uint64           // first ready seq not yet fetched
	leases map[uint64]lease // fetched, not yet settled
}

// lease remembers where a fetched entry lives and what it holds.
type lease struct {
	key    []byte // its q/ or r/ key
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
	for {
		if err := q.l.checkOpen(); err != nil {
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

// wait returns when something was appended, when nextDue (if set) comes,
// or with an error when ctx ends or the log closes.
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
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// scan collects up to max ready entries: due retries first, then new
// entries from the cursor on. It also returns when the earliest retry that
// is not yet due becomes due (zero if none).
func (q *queue) scan(max int, now time.Time) (out []pipeline.Delivery, nextDue time.Time, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	cursor := q.cursor
	// Every seq below appended was appended before the snapshot below
	// is taken (l.next moves only after the commit), so it is in it.
	l := q.l
	l.mu.Lock()
	appended := l.next
	l.mu.Unlock()
	err = q.l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry, PrefetchValues: true, PrefetchSize: 64})
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
				nextDue = due
				break
			}
			d, err := q.deliver(txn, it.Item(), seq)
			if err != nil {
				it.Close()
				return err
			}
			out = append(out, d)
		}
		it.Close()
		if len(out) >= max {
			return nil
		}
		it = txn.NewIterator(badger.IteratorOptions{Prefix: q.ready, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(q.readyKeyAt(q.cursor)); it.ValidForPrefix(q.ready) && len(out) < max; it.Next() {
			key := it.Item().Key()
			if len(key) != len(q.ready)+8 {
				continue
			}
			seq := binary.BigEndian.Uint64(key[len(q.ready):])
			d, err := q.deliver(txn, it.Item(), seq)
			if err != nil {
				return err
			}
			out = append(out, d)
			q.cursor = seq + 1
		}
		if !it.ValidForPrefix(q.ready) && q.cursor < appended {
			// No ready entry from the cursor on: none below appended
			// either, so the cursor may pass them. Without this, after a
			// restart with nothing queued the cursor would stay at 0 and
			// Stats would walk every delivered entry's deletion marker.
			q.cursor = appended
		}
		return nil
	})
	if err != nil {
		// Leases taken in a failed scan are dropped and the cursor goes
		// back: nothing was handed out, and every ready entry below the
		// cursor stays leased (see readyBelowCursor).
		for _, d := range out {
			delete(q.leases, d.Seq)
		}
		q.cursor = cursor
		return nil, time.Time{}, fmt.Errorf("read queue %s: %w", q.sink, err)
	}
	return out, nextDue, nil
}

// deliver builds the Delivery for the entry at item and leases it.
// q.mu is held.
func (q *queue) deliver(txn *badger.Txn, item *badger.Item, seq uint64) (pipeline.Delivery, error) {
	t := &logpb.Target{}
	if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, t) }); err != nil {
		return pipeline.Delivery{}, fmt.Errorf("decode queue entry %d: %w", seq, err)
	}
	ev, ok := q.l.recent.get(seq)
	if !ok {
		rec, err := q.l.readEvent(txn, seq)
		if err != nil {
			return pipeline.Delivery{}, fmt.Errorf("event %d of queue entry: %w", seq, err)
		}
		ev = eventFromRecord(rec)
	}
	q.leases[seq] = lease{key: item.KeyCopy(nil), target: t}
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
	for _, s := range settlements {
		ls, ok := q.leases[s.Seq]
		if !ok {
			return fmt.Errorf("settle %s entry %d: not fetched, or settled already", q.sink, s.Seq)
		}
		if err := txn.Delete(ls.key); err != nil {
			return q.l.writeErr(err)
		}
		if s.Outcome == pipeline.Hold {
			if err := q.hold(txn, s.Seq, ls.key, ls.target); err != nil {
				return err
			}
			continue
		}
		// An entry still at its ready key has never been settled, retried
		// or replayed: it has no record yet, and the first attempt (most
		// of them) skips the lookup.
		var prev *logpb.Delivery
		if !bytes.HasPrefix(ls.key, q.ready) {
			var err error
			if prev, err = getDelivery(txn.Txn, s.Seq, q.sink); err != nil {
				return fmt.Errorf("settle %s entry %d: %w", q.sink, s.Seq, err)
			}
		}
		if err := txn.putDelivery(s.Seq, q.sink, settled(prev, ls.target.GetRoute(), s, now)); err != nil {
			return q.l.writeErr(err)
		}
		t := &logpb.Target{Route: ls.target.GetRoute(), Payload: ls.target.GetPayload(), Attempts: ls.target.GetAttempts() + 1, LastError: s.Err}
		var key []byte
		switch s.Outcome {
		case pipeline.Ack:
			continue
		case pipeline.Retry:
			key = retryKey(q.sink, s.RetryAt, s.Seq)
		case pipeline.Dead:
			t.FailedAtUnixNano = now.UnixNano()
			key = deadKey(q.sink, s.Seq)
		default:
			return fmt.Errorf("settle %s entry %d: unknown outcome %d", q.sink, s.Seq, s.Outcome)
		}
		v, err := proto.Marshal(t)
		if err != nil {
			return fmt.Errorf("encode queue entry: %w", err)
		}
		if err := txn.Set(key, v); err != nil {
			return q.l.writeErr(err)
		}
	}
	released, err := q.releaseIn(txn, release, now)
	if err != nil {
		return err
	}
	if err := q.l.commit(txn); err != nil {
		return err
	}
	for _, s := range settlements {
		delete(q.leases, s.Seq)
	}
	if released > 0 {
		q.wake()
	}
	return nil
}

// Stats implements [pipeline.Queue]. Ready entries are counted from the
// cursor on, plus the leased ones below it (see readyBelowCursor), so the
// deletion markers that settled entries leave below the cursor until
// Badger compacts them away are not walked: with them, a count after a
// million deliveries took 100 ms. Retrying and dead entries are counted
// key by key, so Stats costs time in proportion to the queue's length.
func (q *queue) Stats(ctx context.Context) (pipeline.QueueStats, error) {
	if err := q.l.checkOpen(); err != nil {
		return pipeline.QueueStats{}, err
	}
	txn, from, leased, _ := q.snapshot()
	defer txn.Discard()
	return pipeline.QueueStats{
		Ready:    leased + countFrom(txn, q.ready, from),
		Retrying: countFrom(txn, q.retry, q.retry),
		Dead:     countFrom(txn, q.dead, q.dead),
	}, nil
}

// snapshot returns a read transaction of the log as it is now, with what
// of the queue's memory goes with it: the ready key at the cursor, and the
// number and lowest seq of the leased ready entries below it (see
// readyBelowCursor). q.mu is held only while they are taken, not while
// the caller walks keys: Stats and Oldest walk every retry and dead key,
// millions after a long outage, and the sink's Fetch and Settle would
// wait for as long. Settle commits and then drops its leases under q.mu,
// so the transaction sees exactly the settlements the leases reflect.
// The caller discards txn.
func (q *queue) snapshot() (txn *badger.Txn, from []byte, leased int, lowest uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	txn = q.l.db.NewTransaction(false)
	leased, lowest = q.readyBelowCursor()
	return txn, q.readyKeyAt(q.cursor), leased, lowest
}

// readyBelowCursor returns how many ready entries lie below the cursor and
// the lowest of their seqs (0 if none). Only a fetch moves the cursor, past
// the entries it leases, and only Append writes ready keys (at seqs above
// every other), so every ready entry below the cursor is leased: the ones
// settled since are gone (or moved to retry or dead keys), and a failed
// fetch moves the cursor back. Hence the leases say it all. q.mu is held.
func (q *queue) readyBelowCursor() (n int, lowest uint64) {
	for seq, ls := range q.leases {
		if seq < q.cursor && bytes.HasPrefix(ls.key, q.ready) {
			n++
			if lowest == 0 || seq < lowest {
				lowest = seq
			}
		}
	}
	return n, lowest
}

// readyKeyAt returns the ready key of seq in a new slice.
func (q *queue) readyKeyAt(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), q.ready...), seq)
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

// DeadLetters implements [pipeline.Queue].
func (q *queue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	if err := q.l.checkOpen(); err != nil {
		return nil, err
	}
	if after == math.MaxUint64 {
		return nil, nil // nothing comes after; seeking after+1 would wrap to the first
	}
	var out []pipeline.DeadLetter
	err := q.l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: q.dead, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(binary.BigEndian.AppendUint64(append([]byte(nil), q.dead...), after+1)); it.ValidForPrefix(q.dead) && len(out) < limit; it.Next() {
			key := it.Item().Key()
			if len(key) != len(q.dead)+8 {
				continue
			}
			seq := binary.BigEndian.Uint64(key[len(q.dead):])
			t := &logpb.Target{}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, t) }); err != nil {
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
