package badgerlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// The time index finds an event by its id without a key per event.
//
// Event ids are UUIDv7s (ingest makes them): their first 48 bits are the
// unix milliseconds at which they were made. Append groups the events of
// one call, in seq order, into runs whose ids fall in the same bucket of
// bucketBits milliseconds, and writes one key per run:
//
//	t/<bucket><first seq> = <last seq><fingerprints>     (seqs 8-byte big-endian)
//
// followed by a one-byte fingerprint of each event's id (fingerprint). A
// batch of appends usually makes one or two such keys, where the id index
// (i/<id>) made one per event: with the dedup key and the event's own key,
// that was a third of the keys Badger took per event, and a third of the
// deletions retention writes. Looking an id up reads the runs of its
// bucket and only the records whose fingerprint matches (1 in 256 of the
// others): a bucket of 128 ms at 10,000 events a second holds ~1,300
// events, and one whose milliseconds a clock step crowded (google/uuid then
// counts up within one millisecond) at most 2^19; BenchmarkEventByID.
//
// Events appended before this index (below m/time-from, the first seq a
// version with it appended) and events whose id is no UUIDv7 keep their
// i/<id> key, which a lookup tries first. So do events an older binary
// appended after a downgrade: Open sees that the last event has an i/ key
// and records m/time-legacy, below which retention looks for i/ keys to
// delete; runs whose events an older binary removed are swept once all
// their events are below the oldest kept (sweepRuns).
const bucketBits = 7 // 128 ms

var (
	keyTimeFrom   = []byte("m/time-from")
	keyTimeLegacy = []byte("m/time-legacy")
	preTime       = []byte("t/")
)

// appendedByOlder reports whether the event at seq, a UUIDv7, has an i/
// key: an older binary appended it.
func appendedByOlder(txn *badger.Txn, seq uint64) bool {
	item, err := txn.Get(eventKey(seq))
	if err != nil {
		return false
	}
	var id string
	err = item.Value(func(v []byte) error {
		rec := &logpb.Event{}
		if err := decode(v, rec); err != nil {
			return err
		}
		id = rec.GetId()
		return nil
	})
	if _, ok := idBucket(id); err != nil || !ok {
		return false
	}
	_, err = txn.Get(indexKey(id))
	return err == nil
}

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

// timePrefix is the prefix of bucket's runs; timeKey the key of its run
// from first on.
func timePrefix(bucket uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), preTime...), bucket)
}

func timeKey(bucket, first uint64) []byte {
	return binary.BigEndian.AppendUint64(timePrefix(bucket), first)
}

// fingerprint is the byte of id that a run keeps for each event, so that
// a lookup reads only the records that may have it.
func fingerprint(id string) byte {
	h := fnv.New32a() // no allocation: the compiler keeps it on the stack
	h.Write([]byte(id))
	s := h.Sum32()
	return byte(s ^ s>>8 ^ s>>16 ^ s>>24)
}

// timeRuns collects an Append's runs: add each event in seq order, then
// write.
type timeRuns struct {
	runs []timeRun
}

type timeRun struct {
	bucket, first, last uint64
	fps                 []byte // the events' fingerprints, first to last
}

// add adds the event at seq, whose id is in bucket, to the runs.
func (r *timeRuns) add(bucket, seq uint64, id string) {
	if n := len(r.runs); n > 0 && r.runs[n-1].bucket == bucket && r.runs[n-1].last+1 == seq {
		r.runs[n-1].last = seq
		r.runs[n-1].fps = append(r.runs[n-1].fps, fingerprint(id))
		return
	}
	r.runs = append(r.runs, timeRun{bucket, seq, seq, []byte{fingerprint(id)}})
}

// write sets the runs' keys in txn.
func (r *timeRuns) write(txn *wtxn) error {
	for _, run := range r.runs {
		if err := txn.Set(timeKey(run.bucket, run.first), append(seqBytes(run.last), run.fps...)); err != nil {
			return err
		}
	}
	return nil
}

// runValue reads a run's value: its last seq and fingerprints.
func runValue(first uint64, v []byte) (last uint64, fps []byte, ok bool) {
	if len(v) < 8 {
		return 0, nil, false
	}
	last = binary.BigEndian.Uint64(v)
	if last < first || last-first+1 != uint64(len(v)-8) {
		return 0, nil, false
	}
	return last, v[8:], true
}

// lookup returns the seq of the event with id, or badger.ErrKeyNotFound.
// It gives up when ctx ends.
func lookup(ctx context.Context, txn *badger.Txn, id string) (uint64, error) {
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
	fp := fingerprint(id)
	pre := timePrefix(bucket)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre, PrefetchValues: true, PrefetchSize: 16})
	defer it.Close()
	for it.Seek(pre); it.ValidForPrefix(pre); it.Next() {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("look up event %s: %w", id, err)
		}
		k := it.Item().Key()
		if len(k) != len(pre)+8 {
			return 0, fmt.Errorf("corrupt time index entry %x", k)
		}
		first := binary.BigEndian.Uint64(k[len(pre):])
		var candidates []uint64
		err := it.Item().Value(func(v []byte) error {
			_, fps, ok := runValue(first, v)
			if !ok {
				return fmt.Errorf("corrupt time index entry %x", k)
			}
			for i, f := range fps {
				if f == fp {
					candidates = append(candidates, first+uint64(i))
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		for _, seq := range candidates {
			item, err := txn.Get(eventKey(seq))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue // removed by retention
			}
			if err != nil {
				return 0, err
			}
			var match bool
			if err := item.Value(func(v []byte) (err error) { match, err = hasID(v, id); return err }); err != nil {
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
			if err != nil || len(k) != len(pre)+8 {
				continue // kept: a lookup reports what is wrong with it
			}
			first := binary.BigEndian.Uint64(k[len(pre):])
			if last, _, ok := runValue(first, v); ok && runGone(snap, first, last, gone) {
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

// sweepRuns removes runs whose events are all below the oldest event kept,
// up to pruneBatch of them: runs that retention passed by because an older
// binary (after a downgrade) removed their events, or that a failed append
// left. It stops at the first run it keeps, in key (time) order, so a run
// behind a kept one waits for a later sweep.
func (l *DB) sweepRuns() error {
	l.refMu.Lock()
	defer l.refMu.Unlock()
	snap := l.db.NewTransaction(false)
	defer snap.Discard()
	oldest := uint64(math.MaxUint64)
	events := snap.NewIterator(badger.IteratorOptions{Prefix: preEvent})
	if events.Seek(preEvent); events.ValidForPrefix(preEvent) {
		oldest = binary.BigEndian.Uint64(events.Item().Key()[len(preEvent):])
	}
	events.Close()
	var doomed [][]byte
	it := snap.NewIterator(badger.IteratorOptions{Prefix: preTime, PrefetchValues: true, PrefetchSize: 16})
	for it.Seek(preTime); it.ValidForPrefix(preTime) && len(doomed) < pruneBatch; it.Next() {
		k := it.Item().Key()
		if len(k) != len(preTime)+16 {
			break
		}
		var last uint64
		ok := false
		if err := it.Item().Value(func(v []byte) error {
			last, _, ok = runValue(binary.BigEndian.Uint64(k[len(preTime)+8:]), v)
			return nil
		}); err != nil || !ok || last >= oldest {
			break
		}
		doomed = append(doomed, it.Item().KeyCopy(nil))
	}
	it.Close()
	if len(doomed) == 0 {
		return nil
	}
	txn := l.newBlindTxn()
	for _, k := range doomed {
		if err := txn.Delete(k); err != nil {
			return l.writeErr(err)
		}
	}
	return l.commit(txn)
}
