package badgerlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

// Reject implements [pipeline.RejectionLog.Reject].
func (l *DB) Reject(ctx context.Context, r pipeline.Rejection) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.checkOpen(); err != nil {
		return fmt.Errorf("reject: %w", err)
	}
	seq := rejectSeq.Add(1)
	suffix := eventlog.RejectionSuffix(r.ReceivedAt, seq)
	r.ID = eventlog.RejectionID(r.Source, r.ReceivedAt, seq)
	v, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("reject: %w", err)
	}
	until := r.ReceivedAt.Add(r.Keep)
	expires := until.Unix()
	if until.Nanosecond() > 0 {
		expires++
	}
	if expires <= time.Now().Unix() {
		return nil // already expired
	}
	if err := l.space.check(); err != nil {
		return err
	}
	e := badger.NewEntry(rejectKey(r.Source, suffix), v)
	e.ExpiresAt = uint64(expires)
	txn := l.newTxn()
	defer txn.Discard()
	if err := txn.SetEntry(e); err != nil {
		return l.writeErr(err)
	}
	if err := l.commit(txn); err != nil {
		return err
	}
	return nil
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
