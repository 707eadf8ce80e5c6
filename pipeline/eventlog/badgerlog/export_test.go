package badgerlog

import "github.com/dgraph-io/badger/v4"

// SetSpaceProbe replaces how db measures free space and the maps' holes.
func SetSpaceProbe(db *DB, probe func() (free, holes int64)) { db.space.override = probe }

// DeliveryKeys counts the delivery records in db: the s/ keys, and the
// seqs of kept events in the sinks' Acks (acks.go).
func DeliveryKeys(db *DB) int {
	n := 0
	db.db.View(func(txn *badger.Txn) error {
		n = countFrom(txn, preDelivery, preDelivery)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: preAcks})
		defer it.Close()
		for it.Seek(preAcks); it.ValidForPrefix(preAcks); it.Next() {
			a, _ := itemAcks(it.Item())
			for _, seq := range a.seqs {
				if has, _ := exists(txn, eventKey(seq)); has {
					n++
				}
			}
		}
		return nil
	})
	return n
}

// RecentEvents is how many events l's recent-events cache holds.
func RecentEvents(l *DB) int {
	l.recent.mu.Lock()
	defer l.recent.mu.Unlock()
	return len(l.recent.bySeq)
}

// PoisonRecords makes every Append overwrite its record buffer right after
// its commit, until the test ends.
func PoisonRecords(t interface{ Cleanup(func()) }) {
	poisonRecord = true
	t.Cleanup(func() { poisonRecord = false })
}
