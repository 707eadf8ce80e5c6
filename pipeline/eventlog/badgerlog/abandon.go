package badgerlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

var _ pipeline.Abandoner = (*queue)(nil)

// Abandon implements [pipeline.Abandoner]: the retry keys first (held
// ones included), in key order (due time, then seq), then the oldest
// ready entries, in one transaction under q.mu, so that no Fetch takes
// one of them meanwhile. Each is written as Settle writes a dead letter
// given up on (putSettled): its queue key (if any) deleted, a dead key
// with its target, and its delivery record, dead. A page of max entries
// holds their targets and, for ready entries the recent cache lacks, one
// event read at a time; it ends early once its targets' payloads reach
// [abandonBytes], so that a page of large transform outputs is bounded in
// memory and in the size of its write-ahead log record; and before
// Badger's own bound on a transaction (15% of the memtable, 2.4 MiB by
// default), which payloads under its value threshold (1 MiB) count whole:
// a page that does not fit is made again with the entries that did.
func (q *queue) Abandon(ctx context.Context, max int, errFor func(lastErr string) string) (int, error) {
	if err := q.l.waitQueues(ctx); err != nil {
		return 0, err
	}
	for {
		n, wrote, err := q.abandon(ctx, max, errFor)
		if err != nil && errors.Is(err, badger.ErrTxnTooBig) && wrote > 0 && wrote < max {
			max = wrote // nothing was written: the same page, shorter
			continue
		}
		return n, err
	}
}

// abandon is one try of Abandon's page: on an error nothing is written,
// and wrote says how many entries were written into the transaction
// before it (ErrTxnTooBig: those fit).
func (q *queue) abandon(ctx context.Context, max int, errFor func(lastErr string) string) (n, wrote int, err error) {
	if max < 1 {
		return 0, 0, nil
	}
	if err := q.l.space.check(); err != nil {
		return 0, 0, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	txn := q.l.newTxn()
	defer txn.Discard()
	now := time.Now()
	bytes := 0 // of the page's payloads and errors
	full := func() bool { return bytes >= abandonBytes }
	dead := func(seq uint64, prev *logpb.Delivery, t *logpb.Target) error {
		bytes += len(t.GetPayload()) + len(t.GetLastError())
		s := pipeline.Settlement{Seq: seq, Outcome: pipeline.Dead, Err: errFor(t.GetLastError()), NotAttempted: true}
		if err := q.putSettled(txn, prev, t, s, now); err != nil {
			return err
		}
		wrote++
		return nil
	}
	n, err = q.abandonRetries(txn, max, dead)
	if err != nil {
		return 0, wrote, fmt.Errorf("abandon queue %s: %w", q.sink, err)
	}
	q.pmu.Lock()
	var seqs []uint64
	if !full() {
		seqs = q.pending.take(max - n)
	}
	legacy := make(map[uint64]*logpb.Target, len(q.pending.legacy))
	for _, seq := range seqs {
		if t, ok := q.pending.legacy[seq]; ok {
			legacy[seq] = t
		}
	}
	q.pmu.Unlock()
	done, err := q.abandonReady(txn, seqs, legacy, dead, full)
	if err == nil && done < len(seqs) {
		// Full: the rest goes back, untouched (untake puts back the last
		// ones taken).
		q.pmu.Lock()
		q.pending.untake(len(seqs) - done)
		q.pmu.Unlock()
		seqs = seqs[:done]
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = q.l.commit(txn)
	}
	q.pmu.Lock()
	defer q.pmu.Unlock()
	if err != nil {
		// Nothing was handed out: the ready entries go back (a commit that
		// failed may yet be applied; writing them dead again is harmless).
		q.pending.untake(len(seqs))
		return 0, wrote, fmt.Errorf("abandon queue %s: %w", q.sink, err)
	}
	for _, seq := range seqs {
		q.pending.settle(seq)
	}
	return n + len(seqs), wrote, nil
}

// abandonRetries deletes up to max retry keys of the queue that are not
// leased, held ones included, until their payloads reach abandonBytes,
// passing each to dead in txn, and returns how many it deleted. q.mu is
// held.
func (q *queue) abandonRetries(txn *wtxn, max int, dead func(uint64, *logpb.Delivery, *logpb.Target) error) (int, error) {
	type found struct {
		key []byte
		seq uint64
		t   *logpb.Target
	}
	var fs []found
	size := 0 // of the payloads found, as dead will count them
	it := txn.NewIterator(badger.IteratorOptions{Prefix: q.retry, PrefetchValues: true, PrefetchSize: 64})
	for it.Seek(q.retry); it.ValidForPrefix(q.retry) && len(fs) < max && size < abandonBytes; it.Next() {
		rest := it.Item().Key()[len(q.retry):]
		if len(rest) != 16 {
			continue
		}
		seq := binary.BigEndian.Uint64(rest[8:])
		if _, leased := q.leases[seq]; leased {
			continue
		}
		t := &logpb.Target{}
		if err := it.Item().Value(func(v []byte) error { return decode(v, t) }); err != nil {
			it.Close()
			return 0, fmt.Errorf("decode queue entry %d: %w", seq, err)
		}
		fs = append(fs, found{key: it.Item().KeyCopy(nil), seq: seq, t: t})
		size += len(t.GetPayload()) + len(t.GetLastError())
	}
	it.Close()
	for _, f := range fs {
		if err := txn.Delete(f.key); err != nil {
			return 0, q.l.writeErr(err)
		}
		prev, err := getDelivery(txn.Txn, f.seq, q.sink)
		if err != nil {
			return 0, fmt.Errorf("entry %d: %w", f.seq, err)
		}
		if err := dead(f.seq, prev, f.t); err != nil {
			return 0, err
		}
	}
	return len(fs), nil
}

// abandonReady passes each ready entry seqs (taken from pending) to dead
// in txn, with the target of its event's route to the sink, until full;
// an entry of legacy has a ready key, which it deletes. A ready entry has
// no delivery record yet (see settleRelease). It returns how many of seqs
// it passed, in order. q.mu is held.
func (q *queue) abandonReady(txn *wtxn, seqs []uint64, legacy map[uint64]*logpb.Target, dead func(uint64, *logpb.Delivery, *logpb.Target) error, full func() bool) (int, error) {
	for i, seq := range seqs {
		if full() {
			return i, nil
		}
		t := legacy[seq]
		if t != nil {
			if err := txn.Delete(readyKey(q.sink, seq)); err != nil {
				return 0, q.l.writeErr(err)
			}
		} else if _, routes, ok := q.l.recent.get(seq); ok {
			t = routes.target(q.sink)
		} else {
			rec, err := q.l.readEvent(txn.Txn, seq)
			if err != nil {
				return 0, fmt.Errorf("event %d of queue entry: %w", seq, err)
			}
			t = routing{rec.GetRoutes(), rec.GetPayloads()}.target(q.sink)
		}
		if err := dead(seq, nil, t); err != nil {
			return 0, err
		}
	}
	return len(seqs), nil
}

// abandonBytes bounds what one Abandon page holds of its targets'
// payloads and errors (a transform's output can be 1 MiB): a page of 1,000
// such targets would hold a gigabyte, in memory and in one record of the
// write-ahead log.
var abandonBytes = 32 << 20 // a var: a test lowers it
