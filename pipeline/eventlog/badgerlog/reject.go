package badgerlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog"
)

// Rejected requests live in their own keyspace, apart from events and
// queues, each with a Badger TTL of its keep_rejected:
//
//	j/<source>/<received_at><seq>   rejection (JSON), received_at = 8-byte BE unix nanoseconds, seq = 8-byte BE
//
// The JSON is [pipeline.Rejection]'s, by its Go field names: renaming one
// of its fields (or giving it a json tag) changes the stored format, and
// rejections kept by an earlier build would read without it.
//
// Badger's TTL has a granularity of one second; expired keys are never
// read and compaction removes them. A rejection's id (and cursor) is
// [eventlog.RejectionID] of the same received_at and seq.

var _ pipeline.RejectionLog = (*DB)(nil)

var preReject = []byte("j/")

// rejectSeq tells apart rejections of the same nanosecond.
var rejectSeq atomic.Uint64

func rejectKey(source string, suffix []byte) []byte {
	return append(sinkPrefix(preReject, source), suffix...)
}

// A source's keep_rejected_max is kept with a ledger of its rejections,
// oldest first, read from the log the first time the source rejects a
// request after Open and kept up to date from then on.
type rejectLedger struct {
	mu      sync.Mutex
	sources map[string]*sourceLedger
}

type sourceLedger struct {
	entries []ledgerEntry // oldest first
	total   int64
}

type ledgerEntry struct {
	key     []byte
	size    int64
	expires int64 // unix seconds
}

// sourceLedger returns source's ledger, reading it from the log the
// first time. lg.mu is held.
func (l *DB) sourceLedger(lg *rejectLedger, source string) (*sourceLedger, error) {
	if sl := lg.sources[source]; sl != nil {
		return sl, nil
	}
	if lg.sources == nil {
		lg.sources = map[string]*sourceLedger{}
	}
	sl := &sourceLedger{}
	prefix := sinkPrefix(preReject, source)
	err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			if item.IsDeletedOrExpired() {
				continue
			}
			var r pipeline.Rejection
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
				return fmt.Errorf("rejection %q: %w", item.Key(), err)
			}
			sl.entries = append(sl.entries, ledgerEntry{key: item.KeyCopy(nil), size: r.Size(), expires: int64(item.ExpiresAt())})
			sl.total += r.Size()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	lg.sources[source] = sl
	return sl, nil
}

// Reject implements [pipeline.RejectionLog.Reject].
func (l *DB) Reject(ctx context.Context, r pipeline.Rejection) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := l.checkOpen(); err != nil {
		return 0, fmt.Errorf("reject: %w", err)
	}
	if r.KeepMax > 0 && r.Size() > r.KeepMax {
		return 1, nil // would push out every other and still not fit
	}
	seq := rejectSeq.Add(1)
	suffix := eventlog.RejectionSuffix(r.ReceivedAt, seq)
	r.ID = eventlog.RejectionID(r.Source, r.ReceivedAt, seq)
	v, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("reject: %w", err)
	}
	until := r.ReceivedAt.Add(r.Keep)
	expires := until.Unix()
	if until.Nanosecond() > 0 {
		expires++
	}
	now := time.Now().Unix()
	if expires <= now {
		return 0, nil // already expired
	}
	if err := l.space.check(); err != nil {
		return 0, err
	}
	key := rejectKey(r.Source, suffix)
	e := badger.NewEntry(key, v)
	e.ExpiresAt = uint64(expires)
	txn := l.newTxn()
	defer txn.Discard()
	if err := txn.SetEntry(e); err != nil {
		return 0, l.writeErr(err)
	}
	if r.KeepMax <= 0 {
		return 0, l.commit(txn)
	}
	lg := &l.rejects
	lg.mu.Lock()
	defer lg.mu.Unlock()
	sl, err := l.sourceLedger(lg, r.Source)
	if err != nil {
		return 0, fmt.Errorf("reject: read the rejections of source %q: %w", r.Source, err)
	}
	// Expired ones count no more; then the oldest go until r fits.
	keep := sl.entries[:0:0]
	total := int64(0)
	for _, le := range sl.entries {
		if le.expires > now {
			keep = append(keep, le)
			total += le.size
		}
	}
	drop := 0
	for drop < len(keep) && total+r.Size() > r.KeepMax {
		if err := txn.Delete(keep[drop].key); err != nil {
			return 0, l.writeErr(err)
		}
		total -= keep[drop].size
		drop++
	}
	if err := l.commit(txn); err != nil {
		return 0, err
	}
	sl.entries = append(keep[drop:], ledgerEntry{key: key, size: r.Size(), expires: expires})
	sl.total = total + r.Size()
	return drop, nil
}

// Rejections implements [pipeline.RejectionLog.Rejections].
func (l *DB) Rejections(ctx context.Context, f pipeline.RejectionFilter) ([]pipeline.Rejection, string, error) {
	if err := l.checkOpen(); err != nil {
		return nil, "", fmt.Errorf("rejections: %w", err)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	prefix := preReject
	if f.Source != "" {
		prefix = sinkPrefix(preReject, f.Source)
	}
	seek := prefix
	if f.After != "" {
		source, suffix, ok := eventlog.ParseRejectionID(f.After)
		if !ok {
			return nil, "", fmt.Errorf("rejections: cursor %q: %w", f.After, pipeline.ErrBadCursor)
		}
		after := append(rejectKey(source, suffix), 0) // just past the cursor
		if bytes.Compare(after, seek) > 0 {
			seek = after
		}
	}
	var out []pipeline.Rejection
	next := ""
	err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			if item.IsDeletedOrExpired() {
				continue
			}
			var r pipeline.Rejection
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
				return fmt.Errorf("rejection %q: %w", item.Key(), err)
			}
			if !f.Since.IsZero() && r.ReceivedAt.Before(f.Since) {
				continue
			}
			if len(out) == f.Limit {
				next = out[len(out)-1].ID
				return nil
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("rejections: %w", err)
	}
	return out, next, nil
}
