package badgerlog

import (
	"bytes"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// budget counts the writes of a transaction that has no Badger
// transaction (an Append's: see newBlindTxn) against the limits a Badger
// transaction would check, with Badger's own arithmetic (Txn.modify and
// Txn.checkSize in badger v4's txn.go), so that a record Append accepts is
// one that fits a Badger transaction when the committer applies it (with
// setEvent, which counts an event's value as Badger will store it), and a
// batch too big still says badger.ErrTxnTooBig, which the writer answers by
// splitting it. TestBudgetAgreesWithBadger holds the two together, and
// TestAppendCountsAnEventAsBadgerWillStoreIt the event values.
type budget struct {
	count, size       int64
	maxCount, maxSize int64 // Badger's DB.MaxBatchCount and MaxBatchSize
	threshold         int64 // the value threshold: values at or over it go to the value log
	maxValue          int64 // the value log's file size: no value may be larger
}

// maxBadgerKey is the longest key Badger takes (Txn.modify).
const maxBadgerKey = 65000

// newBudget returns an empty budget for l's Badger. Like a new Badger
// transaction, it starts with the entry that marks a transaction's end
// (Badger's "!badger!txn") counted.
func (l *DB) newBudget() *budget {
	return &budget{
		count: 1, size: int64(len("!badger!txn") + 10),
		maxCount: l.db.MaxBatchCount(), maxSize: l.db.MaxBatchSize(),
		threshold: l.valueThreshold, maxValue: l.valueLogFileSize,
	}
}

// badgerPrefix starts the keys Badger keeps for itself.
var badgerPrefix = []byte("!badger!")

// add counts a write of key with value (nil for a delete).
func (b *budget) add(key, value []byte) error {
	switch {
	case len(key) == 0:
		return badger.ErrEmptyKey
	case bytes.HasPrefix(key, badgerPrefix):
		return badger.ErrInvalidKey
	case len(key) > maxBadgerKey:
		return fmt.Errorf("key of %d bytes: over Badger's limit of %d", len(key), maxBadgerKey)
	case int64(len(value)) > b.maxValue:
		return fmt.Errorf("value of %d bytes: over Badger's limit of %d (the value log's file size)", len(value), b.maxValue)
	}
	v := int64(len(value))
	if v >= b.threshold {
		v = 12 // a value pointer
	}
	count := b.count + 1
	size := b.size + int64(len(key)) + v + 2 + 10 // meta and user meta; the version in the key
	if count >= b.maxCount || size >= b.maxSize {
		return badger.ErrTxnTooBig
	}
	b.count, b.size = count, size
	return nil
}
