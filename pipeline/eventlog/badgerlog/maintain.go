package badgerlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/wal"
)

// every runs do every d until Close, in a goroutine of l.wg.
func (l *DB) every(d time.Duration, do func()) {
	l.wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-l.closed:
				return
			case <-t.C:
				do()
			}
		}
	})
}

// maintain runs retention and value-log garbage collection (every
// MaintenanceInterval: see Open), not after a halt (commit.go), which
// only a restart heals.
func (l *DB) maintain() {
	if l.HaltErr() != nil {
		return
	}
	if n, err := l.Prune(time.Now().Add(-l.opts.Retention)); errors.Is(err, pipeline.ErrClosed) {
		return // closed while Prune waited for the queues' rebuild
	} else if err != nil {
		l.log.Error("retention failed", "err", err)
	} else if n > 0 {
		l.log.Debug("retention removed old events", "events", n)
	}
	if n, err := l.removeSegments(); err != nil {
		l.log.Error("retention of write-ahead log segments failed", "err", err)
	} else if n > 0 {
		// Information: what frees the disk (the events' own removal, every
		// minute under load, stays at debug).
		l.log.Info("retention removed write-ahead log segments", "segments", n, "segment_size", l.opts.SegmentSize)
	}
	if err := l.collectValueLog(); err != nil {
		l.log.Error("value-log garbage collection failed", "err", err)
	}
}

// legacyScan bounds how many events written before the write-ahead log
// removeSegments looks past.
const legacyScan = 10000

// removeSegments removes the write-ahead log's segments that hold no kept
// event and that Open will not replay: those below both the checkpoint and
// the segment of the oldest event.
func (l *DB) removeSegments() (int, error) {
	below, err := l.wal.Checkpoint()
	if err != nil {
		return 0, err
	}
	err = l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: preEvent, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		scanned := 0
		for it.Seek(preEvent); it.ValidForPrefix(preEvent); it.Next() {
			rec := &logpb.Event{}
			if err := it.Item().Value(func(v []byte) error { return decode(v, rec) }); err != nil {
				return fmt.Errorf("decode event: %w", err)
			}
			if rec.GetLength() > 0 {
				below = min(below, rec.GetSegment())
				return nil
			}
			if scanned++; scanned == legacyScan {
				below = 0
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return l.wal.Remove(below)
}

// collectValueLog runs Badger's value-log GC, which only values at or over
// the value threshold (see commit.go) and logs written before the
// write-ahead log need; with neither it returns at once.
// The GC moves values by writing them again, outside the write-ahead log,
// and then deletes the old value-log file; without SyncWrites the moved
// values may still be only in memory then. So an iterator is held open
// meanwhile (Badger defers deleting a value-log file while any iterator is
// open) and Badger's files are synced before it is closed.
func (l *DB) collectValueLog() error {
	l.gcMu.Lock()
	defer l.gcMu.Unlock()
	txn := l.db.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	moved := 0
	for l.checkOpen() == nil {
		err := l.db.RunValueLogGC(0.5)
		l.space.alloc.written() // the GC writes to Badger: see space.go
		if err != nil {
			break
		}
		moved++
	}
	if moved == 0 {
		return nil
	}
	return wal.SyncFiles(l.dir)
}

// pruneBatch bounds one retention transaction.
const pruneBatch = 1000

// Prune removes events received before cutoff that no ready, retry or
// dead-letter entry refers to any more (P6), with their id index entries,
// oldest first. It stops at the first event received at or after cutoff
// and returns how many events it removed.
func (l *DB) Prune(cutoff time.Time) (int, error) {
	// Retention reads the queues' memory (queued): it waits for Open's
	// rebuild of them, never judging by a queue half built (P6).
	if err := l.waitQueues(context.Background()); err != nil {
		return 0, err
	}
	removed := 0
	start := uint64(0)
	stop := uint64(0) // every event below it was looked at
	for {
		n, next, done, err := l.pruneSome(cutoff, start)
		removed += n
		stop = max(stop, next)
		if err != nil {
			return removed, err
		}
		if done {
			if removed > 0 {
				err = l.pruneAcks(stop)
				if err == nil {
					err = l.sweepRuns()
				}
			}
			return removed, err
		}
		start = next
	}
}

// pruneAcks removes the Acks (acks.go) of events retention removed: those
// below stop that hold no kept event, pruneBatch per transaction.
func (l *DB) pruneAcks(stop uint64) error {
	from := preAcks
	for {
		next, more, err := l.pruneSomeAcks(from, stop)
		if err != nil || !more {
			return err
		}
		from = next
	}
}

// pruneSomeAcks is one transaction of pruneAcks, from the key from on.
func (l *DB) pruneSomeAcks(from []byte, stop uint64) (next []byte, more bool, err error) {
	l.refMu.Lock()
	defer l.refMu.Unlock()
	if err := l.space.check(); err != nil {
		return nil, false, err
	}
	txn := l.newTxn()
	defer txn.Discard()
	n, next, more, err := deleteAcks(txn, from, stop)
	if err != nil {
		return nil, false, l.writeErr(err)
	}
	if n == 0 {
		return next, more, nil
	}
	return next, more, l.commit(txn)
}

// retriesAndDead returns the seqs that some retry or dead-letter entry
// refers to, as txn sees them.
func retriesAndDead(txn *badger.Txn) map[uint64]bool {
	refs := map[uint64]bool{}
	for _, pre := range [][]byte{preRetry, preDead} {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
		for it.Seek(pre); it.ValidForPrefix(pre); it.Next() {
			k := it.Item().Key()
			if len(k) >= 8 {
				refs[binary.BigEndian.Uint64(k[len(k)-8:])] = true
			}
		}
		it.Close()
	}
	return refs
}

// pruneSome removes up to pruneBatch unreferenced old events from start on.
// Every reference is read in the transaction's one snapshot, so an entry
// that moves between queues meanwhile is seen in one place or the other.
func (l *DB) pruneSome(cutoff time.Time, start uint64) (removed int, next uint64, done bool, err error) {
	// Queued entries are in memory (pending.go). An event appended after
	// limit is read is left alone: Append queues it before it moves next.
	// No queue is locked (a sink's Fetch and Settle do not wait for
	// retention): see queued for how memory and the snapshot agree.
	l.mu.Lock()
	limit := l.next
	l.mu.Unlock()
	l.refMu.Lock()
	defer l.refMu.Unlock()
	if err := l.space.check(); err != nil {
		return 0, start, true, err
	}
	// Everything is read in one snapshot, the deletions written by a
	// transaction that reads nothing: an iterator of a write transaction
	// sorts all its pending writes each time one is made, and one per
	// event made retention cost more than ingest (docs/performance.md).
	snap := l.db.NewTransaction(false)
	defer snap.Discard()
	refs := retriesAndDead(snap)
	if pruneHook != nil {
		pruneHook()
	}
	look := newSettledLookup(snap, start)
	defer look.close()
	it := snap.NewIterator(badger.IteratorOptions{Prefix: preEvent, PrefetchValues: true, PrefetchSize: 100})
	var doomed [][]byte // keys to delete: events, their delivery records, their i/ keys
	timeFrom := l.timeFrom.Load()
	gone, buckets := map[uint64]bool{}, map[uint64]bool{} // the time index's runs to look at
	done = true
	scanned := 0
	for it.Seek(eventKey(start)); it.ValidForPrefix(preEvent); it.Next() {
		if scanned == pruneBatch {
			done = false
			break
		}
		scanned++
		k := it.Item().KeyCopy(nil)
		seq := binary.BigEndian.Uint64(k[len(preEvent):])
		if seq >= limit {
			done = true
			break
		}
		next = seq + 1
		rec := &logpb.Event{}
		if err := it.Item().Value(func(v []byte) error { return decode(v, rec) }); err != nil {
			it.Close()
			return 0, next, true, fmt.Errorf("decode event %d: %w", seq, err)
		}
		if !time.Unix(0, rec.GetReceivedAtUnixNano()).Before(cutoff) {
			done = true
			break
		}
		if refs[seq] {
			continue
		}
		look.at(seq)
		if l.queued(look, rec, seq) {
			continue
		}
		removed++
		doomed = append(doomed, k)
		doomed = append(doomed, look.keys...) // its delivery records go with it
		b, ok := idBucket(rec.GetId())
		switch {
		case !ok || timeFrom == 0 || seq < timeFrom:
			doomed = append(doomed, indexKey(rec.GetId()))
		default:
			gone[seq], buckets[b] = true, true
			if seq < l.legacyUpto { // maybe appended by an older binary: timeindex.go
				if _, err := snap.Get(indexKey(rec.GetId())); err == nil {
					doomed = append(doomed, indexKey(rec.GetId()))
				}
			}
		}
	}
	it.Close()
	if removed == 0 {
		return 0, next, done, nil
	}
	txn := l.newBlindTxn() // it only deletes: the reads were snap's
	for _, k := range doomed {
		if err := txn.Delete(k); err != nil {
			return 0, next, true, l.writeErr(err)
		}
	}
	if err := pruneRuns(snap, txn, buckets, gone); err != nil {
		return 0, next, true, l.writeErr(err)
	}
	if err := l.commit(txn); err != nil {
		return 0, next, true, err
	}
	return removed, next, done, nil
}

// queued reports whether any sink may still have the event at seq, whose
// record is rec, queued or about to refer to it, as far as retention can
// tell from look's snapshot (taken after seq was appended and queued) and
// the queues' memory read now. An entry still in memory is queued. One no
// longer there was settled: if its delivery record is in the snapshot, so
// is what the settlement wrote (a retry or dead key, which the caller
// counts); if not, it was settled after the snapshot, which cannot tell
// where it went, and the event is kept until the next pass. For records
// written before routes, the ready keys in the snapshot say it.
func (l *DB) queued(look *settledLookup, rec *logpb.Event, seq uint64) bool {
	for _, r := range rec.GetRoutes() {
		l.mu.Lock()
		q, ok := l.queues[r.GetSink()]
		l.mu.Unlock()
		if ok {
			q.pmu.Lock()
			has := q.pending.has(seq)
			q.pmu.Unlock()
			if has {
				return true
			}
		}
		if settled, err := look.settled(seq, r.GetSink()); err != nil || !settled {
			return true // settled after the snapshot, or in doubt
		}
	}
	if len(rec.GetRoutes()) > 0 {
		return false
	}
	for _, s := range rec.GetSinks() {
		_, err := look.txn.Get(readyKey(s, seq))
		if err == nil || !errors.Is(err, badger.ErrKeyNotFound) {
			return true // kept when in doubt
		}
	}
	return false
}

// pruneHook, when set (by tests only), is called by pruneSome once its
// snapshot is taken.
var pruneHook func()

// badgerLogger sends Badger's messages to slog; its chatty Info goes to
// Debug, and so does its advice on the size of its caches.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, v ...any) { b.l.Error(msg(f, v)) }

func (b badgerLogger) Warningf(f string, v ...any) {
	if cacheAdvice(f) {
		b.l.Debug(msg(f, v))
		return
	}
	b.l.Warn(msg(f, v))
}

// cacheAdvice tells Badger's warnings that its block or index cache "might
// be too small" (two lines, with the cache's metrics) by their format.
// Badger gives them every minute while a cache's hit ratio is below 40%,
// which is how this log runs under load: the dispatchers take new events
// from the recent cache, not Badger, and the dedup lookup of a new key
// misses by nature. No setting of pipelined sizes these caches, so as
// warnings they would only fill an operator's journal under every load.
func cacheAdvice(format string) bool {
	return strings.Contains(format, "might be too small") || strings.HasPrefix(format, "Cache life expectancy")
}

func (b badgerLogger) Infof(f string, v ...any) { b.debug(f, v) }

func (b badgerLogger) Debugf(f string, v ...any) { b.debug(f, v) }

// debug formats only when debug is on: Badger logs four lines at Debugf
// for each batch it writes, and formatting them to throw them away cost
// ~1% of a daemon under load.
func (b badgerLogger) debug(f string, v []any) {
	if b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(msg(f, v))
	}
}

func msg(f string, v []any) string { return "badger: " + strings.TrimSpace(fmt.Sprintf(f, v...)) }
