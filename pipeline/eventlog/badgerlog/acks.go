package badgerlog

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// Most entries are delivered at their first attempt, and their delivery
// records all say the same: delivered, one attempt, at the settlement's
// time. A Settle writes those as one key for the whole settlement,
// a/<sink>/<last seq> (logpb.Acks), instead of a delivery record per event
// and sink: per event with two sinks, two Badger writes of six fewer, and
// what Badger flushes and compacts with them (docs/performance.md).
//
// One sink's Acks never overlap: each holds seqs above every seq of the
// ones written before (queue.ackTop); an entry acked below that (settled
// out of order, which per-key order and abandoned leases can make) gets a
// delivery record of its own. So the Acks that may hold seq is the first
// at or after a/<sink>/<seq>, and Open walks them in seq order beside the
// events. getDelivery reads a delivery record, else the Acks, so every
// reader sees one record either way. Retention removes the Acks whose last
// seq is below the oldest event kept.

var preAcks = []byte("a/")

func acksKey(sink string, last uint64) []byte {
	return binary.BigEndian.AppendUint64(sinkPrefix(preAcks, sink), last)
}

// encodeAcks returns the Acks of seqs (ascending) settled at atUnixNano.
func encodeAcks(seqs []uint64, atUnixNano int64) ([]byte, error) {
	a := &logpb.Acks{AtUnixNano: atUnixNano, Deltas: make([]uint64, len(seqs))}
	prev := uint64(0)
	for i, s := range seqs {
		a.Deltas[i] = s - prev
		prev = s
	}
	return a.MarshalVT()
}

// acks is one decoded Acks.
type acks struct {
	at   int64
	seqs []uint64 // ascending
}

func decodeAcks(v []byte) (acks, error) {
	a := &logpb.Acks{}
	if err := decode(v, a); err != nil {
		return acks{}, fmt.Errorf("decode acks: %w", err)
	}
	out := acks{at: a.GetAtUnixNano(), seqs: make([]uint64, len(a.GetDeltas()))}
	s := uint64(0)
	for i, d := range a.GetDeltas() {
		s += d
		out.seqs[i] = s
	}
	return out, nil
}

// itemAcks decodes the Acks at item.
func itemAcks(item *badger.Item) (acks, error) {
	var a acks
	err := item.Value(func(v []byte) error {
		var err error
		a, err = decodeAcks(v)
		return err
	})
	return a, err
}

func (a acks) has(seq uint64) bool {
	_, ok := slices.BinarySearch(a.seqs, seq)
	return ok
}

// ackedAt returns when seq was acked at sink at its first attempt, from
// the sink's Acks; ok is false when none holds it.
func ackedAt(txn *badger.Txn, seq uint64, sink string) (at int64, ok bool, err error) {
	pre := sinkPrefix(preAcks, sink)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre, PrefetchValues: false})
	defer it.Close()
	it.Seek(acksKey(sink, seq))
	if !it.ValidForPrefix(pre) {
		return 0, false, nil
	}
	a, err := itemAcks(it.Item())
	if err != nil {
		return 0, false, fmt.Errorf("acks of %s at %d: %w", sink, seq, err)
	}
	return a.at, a.has(seq), nil
}

// acksDelivery is the delivery record that an ack at its first attempt,
// at atUnixNano, stands for (without its route, which the event's record
// has).
func acksDelivery(atUnixNano int64) *logpb.Delivery {
	return &logpb.Delivery{
		State: logpb.Delivery_DELIVERED, Attempts: 1,
		FirstAttemptUnixNano: atUnixNano, LastAttemptUnixNano: atUnixNano, DeliveredAtUnixNano: atUnixNano,
	}
}

// loadAckTop sets q.ackTop from the sink's last Acks, once. q.mu is held.
func (q *queue) loadAckTop(txn *badger.Txn) error {
	if q.ackTopRead {
		return nil
	}
	pre := sinkPrefix(preAcks, q.sink)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre, Reverse: true})
	defer it.Close()
	it.Seek(append(append([]byte(nil), pre...), 0xff))
	if it.ValidForPrefix(pre) {
		k := it.Item().Key()
		if len(k) != len(pre)+8 {
			return fmt.Errorf("corrupt acks key %q", k)
		}
		q.ackTop = binary.BigEndian.Uint64(k[len(pre):])
	}
	q.ackTopRead = true
	return nil
}

// ackWalk walks one sink's Acks in seq order, beside Open's walk of the
// events.
type ackWalk struct {
	it  *badger.Iterator
	pre []byte
	cur acks
	end bool
}

func newAckWalk(txn *badger.Txn, sink string, from uint64) *ackWalk {
	w := &ackWalk{pre: sinkPrefix(preAcks, sink)}
	w.it = txn.NewIterator(badger.IteratorOptions{Prefix: w.pre})
	w.it.Seek(acksKey(sink, from))
	return w
}

// has reports whether seq is in the sink's Acks; seqs come ascending.
func (w *ackWalk) has(seq uint64) (bool, error) {
	for !w.end && (len(w.cur.seqs) == 0 || w.cur.seqs[len(w.cur.seqs)-1] < seq) {
		if !w.it.ValidForPrefix(w.pre) {
			w.end = true
			break
		}
		var err error
		if w.cur, err = itemAcks(w.it.Item()); err != nil {
			return false, err
		}
		w.it.Next()
	}
	return w.cur.has(seq), nil
}

func (w *ackWalk) close() { w.it.Close() }

// deleteAcks deletes in txn every Acks that holds no kept event, of those
// whose last seq is below stop (every event below it was looked at by
// retention; the ones above are young), and returns how many. An Acks is
// not kept for an older event that is (a dead letter nobody drops): its
// own events decide. It looks from the key from on and deletes at most
// pruneBatch (one transaction Badger takes); more is true, and from the key
// to go on from, when it stopped there.
func deleteAcks(txn *wtxn, from []byte, stop uint64) (n int, next []byte, more bool, err error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: preAcks})
	var doomed [][]byte
	for it.Seek(from); it.ValidForPrefix(preAcks); {
		k := it.Item().Key()
		if len(doomed) == pruneBatch {
			next, more = it.Item().KeyCopy(nil), true
			break
		}
		if len(k) < len(preAcks)+8 {
			it.Next()
			continue
		}
		if binary.BigEndian.Uint64(k[len(k)-8:]) >= stop {
			// The rest of this sink's Acks are above stop too: on to the
			// next sink (no sink name has a '/': 0xff sorts after them).
			it.Seek(append(append([]byte(nil), k[:len(k)-8]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
			continue
		}
		a, err := itemAcks(it.Item())
		if err != nil {
			it.Close()
			return 0, nil, false, fmt.Errorf("acks %q: %w", k, err)
		}
		kept := false
		for _, seq := range a.seqs {
			has, err := exists(txn.Txn, eventKey(seq))
			if err != nil {
				it.Close()
				return 0, nil, false, err
			}
			if kept = has; kept {
				break
			}
		}
		if !kept {
			doomed = append(doomed, it.Item().KeyCopy(nil))
		}
		it.Next()
	}
	it.Close()
	for _, k := range doomed {
		if err := txn.Delete(k); err != nil {
			return 0, nil, false, err
		}
	}
	return len(doomed), next, more, nil
}
