package badgerlog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
)

// The time index finds an event by its id without a key per event.
//
// Event ids are UUIDv7s (ingest makes them): their first 48 bits are the
// unix milliseconds at which they were made. Append groups the events of
// one call, in seq order, into runs whose ids fall in the same bucket of
// bucketBits milliseconds, and writes one key per run:
//
//	t/<bucket><first seq> = <last seq>     (8-byte big-endian each)
//
// A batch of appends usually makes one or two such keys, where the id
// index (i/<id>) made one per event: with the dedup key and the event's
// own key, that was a third of the keys Badger took per event, and a
// third of the deletions retention writes. Looking an id up reads the
// runs of its bucket and the records in them until one has the id: at
// 10,000 events a second, some 1,300 small records, about a millisecond.
//
// Events appended before this index (below m/time-from, the first seq a
// version with it appended) and events whose id is no UUIDv7 keep their
// i/<id> key, which a lookup tries first.
const bucketBits = 7 // 128 ms

var (
	keyTimeFrom = []byte("m/time-from")
	preTime     = []byte("t/")
)

// idBucket returns the time-index bucket of id, and whether id is a
// UUIDv7 in the canonical form (36 characters, lower-case hex) that the
// index takes.
func idBucket(id string) (uint64, bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' || id[14] != '7' {
		return 0, false
	}
	var ms uint64
	for i := 0; i < 13; i++ { // the 48 bits of milliseconds: 8 hex digits, '-', 4 more
		if i == 8 {
			continue
		}
		c := id[i]
		switch {
		case '0' <= c && c <= '9':
			ms = ms<<4 | uint64(c-'0')
		case 'a' <= c && c <= 'f':
			ms = ms<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	for i := 14; i < 36; i++ {
		if c := id[i]; i != 18 && i != 23 && !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return 0, false
		}
	}
	return ms >> bucketBits, true
}

func timeKey(bucket, first uint64) []byte {
	k := binary.BigEndian.AppendUint64(append([]byte(nil), preTime...), bucket)
	return binary.BigEndian.AppendUint64(k, first)
}

func timePrefix(bucket uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), preTime...), bucket)
}

// timeRuns collects an Append's runs: add each event in seq order, then
// write.
type timeRuns struct {
	runs []timeRun
}

type timeRun struct{ bucket, first, last uint64 }

// add adds the event at seq, in bucket, to the runs.
func (r *timeRuns) add(bucket, seq uint64) {
	if n := len(r.runs); n > 0 && r.runs[n-1].bucket == bucket && r.runs[n-1].last+1 == seq {
		r.runs[n-1].last = seq
		return
	}
	r.runs = append(r.runs, timeRun{bucket, seq, seq})
}

// write sets the runs' keys in txn.
func (r *timeRuns) write(txn *wtxn) error {
	for _, run := range r.runs {
		if err := txn.Set(timeKey(run.bucket, run.first), seqBytes(run.last)); err != nil {
			return err
		}
	}
	return nil
}

// lookup returns the seq of the event with id, or badger.ErrKeyNotFound.
func lookup(txn *badger.Txn, id string) (uint64, error) {
	item, err := txn.Get(indexKey(id))
	switch {
	case err == nil:
		sv, err := item.ValueCopy(nil)
		if err != nil {
			return 0, err
		}
		if len(sv) != 8 {
			return 0, fmt.Errorf("corrupt index entry for %s", id)
		}
		return binary.BigEndian.Uint64(sv), nil
	case !errors.Is(err, badger.ErrKeyNotFound):
		return 0, err
	}
	bucket, ok := idBucket(id)
	if !ok {
		return 0, badger.ErrKeyNotFound
	}
	pre := timePrefix(bucket)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
	var runs []timeRun
	for it.Seek(pre); it.ValidForPrefix(pre); it.Next() {
		k := it.Item().Key()
		err := it.Item().Value(func(v []byte) error {
			if len(k) != len(pre)+8 || len(v) != 8 {
				return fmt.Errorf("corrupt time index entry %x", k)
			}
			runs = append(runs, timeRun{bucket, binary.BigEndian.Uint64(k[len(pre):]), binary.BigEndian.Uint64(v)})
			return nil
		})
		if err != nil {
			it.Close()
			return 0, err
		}
	}
	it.Close()
	events := txn.NewIterator(badger.IteratorOptions{Prefix: preEvent, PrefetchValues: true, PrefetchSize: 64})
	defer events.Close()
	for _, run := range runs {
		for events.Seek(eventKey(run.first)); events.ValidForPrefix(preEvent); events.Next() {
			seq := binary.BigEndian.Uint64(events.Item().Key()[len(preEvent):])
			if seq > run.last {
				break
			}
			var match bool
			if err := events.Item().Value(func(v []byte) (err error) { match, err = hasID(v, id); return err }); err != nil {
				return 0, fmt.Errorf("decode event %d: %w", seq, err)
			}
			if match {
				return seq, nil
			}
		}
	}
	return 0, badger.ErrKeyNotFound
}

// hasID reports whether the encoded event record v (logpb.Event) has id,
// reading its id field alone.
func hasID(v []byte, id string) (bool, error) {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return false, protowire.ParseError(n)
		}
		v = v[n:]
		if num == 1 && typ == protowire.BytesType { // string id = 1
			b, n := protowire.ConsumeBytes(v)
			if n < 0 {
				return false, protowire.ParseError(n)
			}
			return string(b) == id, nil
		}
		if n = protowire.ConsumeFieldValue(num, typ, v); n < 0 {
			return false, protowire.ParseError(n)
		}
		v = v[n:]
	}
	return false, nil
}

// pruneRuns deletes, in txn, the runs of buckets whose every event is
// gone: deleted by txn (in gone) or not in snap, the snapshot retention
// read the events in.
func pruneRuns(snap *badger.Txn, txn *wtxn, buckets, gone map[uint64]bool) error {
	var doomed [][]byte
	for bucket := range buckets {
		pre := timePrefix(bucket)
		it := snap.NewIterator(badger.IteratorOptions{Prefix: pre})
		for it.Seek(pre); it.ValidForPrefix(pre); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil || len(k) != len(pre)+8 || len(v) != 8 {
				continue // kept: a lookup reports what is wrong with it
			}
			if runGone(snap, binary.BigEndian.Uint64(k[len(pre):]), binary.BigEndian.Uint64(v), gone) {
				doomed = append(doomed, k)
			}
		}
		it.Close()
	}
	for _, k := range doomed {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func runGone(snap *badger.Txn, first, last uint64, gone map[uint64]bool) bool {
	for seq := first; seq <= last && seq >= first; seq++ {
		if gone[seq] {
			continue
		}
		if _, err := snap.Get(eventKey(seq)); !errors.Is(err, badger.ErrKeyNotFound) {
			return false
		}
	}
	return true
}
