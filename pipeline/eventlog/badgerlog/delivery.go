package badgerlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// Delivery records (s/<seq><sink>, logpb.Delivery) say what happened to
// each event at each sink. Append writes none: an event with a ready entry
// and no record is queued, so the hot path pays nothing. Every later change
// of a queue entry (Settle, RetryDead, Requeue) writes the record in the
// same transaction, hence in the same write-ahead log record and fsync.
// Retention removes the records with their event.

var _ pipeline.DeliveryLog = (*DB)(nil)

var preDelivery = []byte("s/")

func deliveryPrefix(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), preDelivery...), seq)
}

func deliveryKey(seq uint64, sink string) []byte {
	return append(deliveryPrefix(seq), sink...)
}

// getDelivery reads the record of (seq, sink), or the one its sink's Acks
// stand for (acks.go: without a route); nil when there is neither.
func getDelivery(txn *badger.Txn, seq uint64, sink string) (*logpb.Delivery, error) {
	d, err := storedDelivery(txn, seq, sink)
	if err != nil || d != nil {
		return d, err
	}
	at, ok, err := ackedAt(txn, seq, sink)
	if err != nil || !ok {
		return nil, err
	}
	return acksDelivery(at), nil
}

// storedDelivery reads the delivery record (s/ key) of (seq, sink); nil
// when there is none.
func storedDelivery(txn *badger.Txn, seq uint64, sink string) (*logpb.Delivery, error) {
	item, err := txn.Get(deliveryKey(seq, sink))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	d := &logpb.Delivery{}
	if err := item.Value(func(v []byte) error { return decode(v, d) }); err != nil {
		return nil, fmt.Errorf("decode delivery record %d/%s: %w", seq, sink, err)
	}
	return d, nil
}

// putDelivery writes the record of (seq, sink).
func (t *wtxn) putDelivery(seq uint64, sink string, d *logpb.Delivery) error {
	v, err := deliveryUTF8.encoded(d.MarshalVT())
	if err != nil {
		return fmt.Errorf("encode delivery record: %w", err)
	}
	return t.Set(deliveryKey(seq, sink), v)
}

// settled returns the record of (seq, sink) after one more attempt that
// ended in s at now; prev (nil: none yet) is not changed.
func settled(prev *logpb.Delivery, route string, s pipeline.Settlement, now time.Time) *logpb.Delivery {
	r := pipeline.DeliveryRecord{State: pipeline.StateQueued}
	if prev != nil {
		r = recordOf("", prev)
	}
	r.Route = route
	return deliveryProto(r.Settled(s, now))
}

// deliveryProto is the stored form of r.
func deliveryProto(r pipeline.DeliveryRecord) *logpb.Delivery {
	d := &logpb.Delivery{
		Route: r.Route, Attempts: uint32(r.Attempts), LastError: r.LastError,
		FirstAttemptUnixNano: unixNano(r.FirstAttemptAt), LastAttemptUnixNano: unixNano(r.LastAttemptAt),
		DeliveredAtUnixNano: unixNano(r.DeliveredAt), NextAttemptUnixNano: unixNano(r.NextAttemptAt),
		DroppedAtUnixNano: unixNano(r.DroppedAt), State: stateValues[r.State],
		NotAttemptedReason: r.NotAttemptedReason,
	}
	for _, f := range r.Failures {
		d.Failures = append(d.Failures, &logpb.Delivery_Failure{Attempt: uint32(f.Attempt), AtUnixNano: unixNano(f.At), Error: f.Err})
	}
	return d
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

var stateNames = map[logpb.Delivery_State]string{
	logpb.Delivery_QUEUED:    pipeline.StateQueued,
	logpb.Delivery_RETRYING:  pipeline.StateRetrying,
	logpb.Delivery_DELIVERED: pipeline.StateDelivered,
	logpb.Delivery_DEAD:      pipeline.StateDead,
	logpb.Delivery_DROPPED:   pipeline.StateDropped,
}

// stateValues is stateNames the other way round.
var stateValues = map[string]logpb.Delivery_State{
	pipeline.StateQueued:    logpb.Delivery_QUEUED,
	pipeline.StateRetrying:  logpb.Delivery_RETRYING,
	pipeline.StateDelivered: logpb.Delivery_DELIVERED,
	pipeline.StateDead:      logpb.Delivery_DEAD,
	pipeline.StateDropped:   logpb.Delivery_DROPPED,
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func recordOf(sink string, d *logpb.Delivery) pipeline.DeliveryRecord {
	st, ok := stateNames[d.GetState()]
	if !ok {
		st = pipeline.StateUnknown
	}
	r := pipeline.DeliveryRecord{
		Sink: sink, Route: d.GetRoute(), State: st, Attempts: int(d.GetAttempts()),
		FirstAttemptAt: unixTime(d.GetFirstAttemptUnixNano()), LastAttemptAt: unixTime(d.GetLastAttemptUnixNano()),
		LastError: d.GetLastError(), DeliveredAt: unixTime(d.GetDeliveredAtUnixNano()),
		NextAttemptAt: unixTime(d.GetNextAttemptUnixNano()), DroppedAt: unixTime(d.GetDroppedAtUnixNano()),
		NotAttemptedReason: d.GetNotAttemptedReason(),
	}
	for _, f := range d.GetFailures() {
		r.Failures = append(r.Failures, pipeline.Failure{Attempt: int(f.GetAttempt()), At: unixTime(f.GetAtUnixNano()), Err: f.GetError()})
	}
	return r
}

// deliveryOf returns the record of (seq, sink), where rec is the event's
// record: the stored one, or, when there is none, what the log says (an
// event with a route to the sink is delivered when the sink's Acks hold
// it, queued when not; a dead letter written by Append, whose route's
// transform failed, is dead; an event written before routes is queued
// while it has a ready key).
func deliveryOf(txn *badger.Txn, rec *logpb.Event, seq uint64, sink string) (pipeline.DeliveryRecord, error) {
	d, err := storedDelivery(txn, seq, sink)
	if err != nil {
		return pipeline.DeliveryRecord{}, err
	}
	if route, routed := routeTo(rec, sink); d == nil && routed {
		at, acked, err := ackedAt(txn, seq, sink)
		if err != nil {
			return pipeline.DeliveryRecord{}, err
		}
		d = &logpb.Delivery{State: logpb.Delivery_QUEUED}
		if acked {
			d = acksDelivery(at)
		}
		d.Route = route
	}
	if d != nil {
		return recordOf(sink, d), nil
	}
	for _, c := range []struct {
		key   []byte
		state logpb.Delivery_State
	}{{deadKey(sink, seq), logpb.Delivery_DEAD}, {readyKey(sink, seq), logpb.Delivery_QUEUED}} {
		item, err := txn.Get(c.key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return pipeline.DeliveryRecord{}, err
		}
		t := &logpb.Target{}
		if err := item.Value(func(v []byte) error { return decode(v, t) }); err != nil {
			return pipeline.DeliveryRecord{}, fmt.Errorf("decode queue entry %d: %w", seq, err)
		}
		return recordOf(sink, &logpb.Delivery{Route: t.GetRoute(), State: c.state, Attempts: t.GetAttempts(), LastError: t.GetLastError()}), nil
	}
	return pipeline.DeliveryRecord{Sink: sink, State: pipeline.StateUnknown}, nil
}

// deliveries returns every record of the event at seq, whose record is
// rec: those of the sinks it was routed to first, in order, then the sinks
// it was replayed to, by name.
func deliveries(txn *badger.Txn, rec *logpb.Event, seq uint64) ([]pipeline.DeliveryRecord, error) {
	sinks := rec.GetSinks()
	out := make([]pipeline.DeliveryRecord, 0, len(sinks))
	for _, s := range sinks {
		r, err := deliveryOf(txn, rec, seq, s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	pre := deliveryPrefix(seq)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre, PrefetchValues: true, PrefetchSize: 16})
	defer it.Close()
	for it.Seek(pre); it.ValidForPrefix(pre); it.Next() {
		sink := string(it.Item().Key()[len(pre):])
		if slices.Contains(sinks, sink) {
			continue
		}
		d := &logpb.Delivery{}
		if err := it.Item().Value(func(v []byte) error { return decode(v, d) }); err != nil {
			return nil, fmt.Errorf("decode delivery record %d/%s: %w", seq, sink, err)
		}
		out = append(out, recordOf(sink, d))
	}
	return out, nil
}

// Deliveries implements [pipeline.DeliveryLog].
func (l *DB) Deliveries(ctx context.Context, id string) ([]pipeline.DeliveryRecord, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	var out []pipeline.DeliveryRecord
	err := l.db.View(func(txn *badger.Txn) error {
		seq, err := lookup(ctx, txn, id)
		if err != nil {
			return err
		}
		item, err := txn.Get(eventKey(seq))
		if err != nil {
			return err
		}
		rec := &logpb.Event{}
		if err := item.Value(func(v []byte) error { return decode(v, rec) }); err != nil {
			return fmt.Errorf("decode event %d: %w", seq, err)
		}
		if out, err = deliveries(txn, rec, seq); err != nil {
			return err
		}
		for i := range out {
			if !pipeline.MatchState(pipeline.StatePending, out[i].State) {
				continue
			}
			_, err := txn.Get(retryKey(out[i].Sink, heldAt, seq))
			switch {
			case err == nil:
				out[i].Held = true
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
		}
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("event %s: %w", id, pipeline.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("delivery records of %s: %w", id, err)
	}
	return out, nil
}

// matchState reports whether the event at seq, whose record is rec, has
// a delivery to sink (to any of its sinks when sink is empty) in the
// filter's state.
func matchState(txn *badger.Txn, rec *logpb.Event, seq uint64, sink, state string) (bool, error) {
	if state == "" {
		return true, nil
	}
	sinks := rec.GetSinks()
	if sink != "" {
		sinks = []string{sink}
	}
	for _, s := range sinks {
		r, err := deliveryOf(txn, rec, seq, s)
		if err != nil {
			return false, err
		}
		if pipeline.MatchState(state, r.State) {
			return true, nil
		}
	}
	return false, nil
}

// settledLookup tells, for events read in ascending seq order from one
// snapshot (Open rebuilding the queues, retention), at which sinks each was
// settled: one iterator walks the delivery records beside the events, and
// one ackWalk per sink its Acks, instead of a lookup (and an iterator) per
// event and sink.
type settledLookup struct {
	txn        *badger.Txn
	from       uint64
	deliveries *badger.Iterator
	keys       [][]byte // seq's delivery records, after at(seq)
	sinks      []string // and their sinks
	acks       map[string]*ackWalk
}

// newSettledLookup returns a lookup for seqs from from on, in txn.
func newSettledLookup(txn *badger.Txn, from uint64) *settledLookup {
	s := &settledLookup{
		txn:        txn,
		from:       from,
		deliveries: txn.NewIterator(badger.IteratorOptions{Prefix: preDelivery}),
		acks:       map[string]*ackWalk{},
	}
	s.deliveries.Seek(deliveryPrefix(from))
	return s
}

// at reads the delivery records of seq, above the last at's: s.keys (fresh:
// the caller may keep them) and s.sinks.
func (s *settledLookup) at(seq uint64) {
	s.keys, s.sinks = nil, s.sinks[:0]
	for ; s.deliveries.ValidForPrefix(preDelivery); s.deliveries.Next() {
		k := s.deliveries.Item().Key()
		if len(k) < len(preDelivery)+8 {
			continue
		}
		if d := binary.BigEndian.Uint64(k[len(preDelivery):]); d > seq {
			break
		} else if d == seq {
			s.keys = append(s.keys, s.deliveries.Item().KeyCopy(nil))
			s.sinks = append(s.sinks, string(k[len(preDelivery)+8:]))
		}
	}
}

// settled reports whether the entry of the last at's seq at sink has a
// delivery record or is in one of the sink's Acks.
func (s *settledLookup) settled(seq uint64, sink string) (bool, error) {
	if slices.Contains(s.sinks, sink) {
		return true, nil
	}
	w, ok := s.acks[sink]
	if !ok {
		w = newAckWalk(s.txn, sink, s.from)
		s.acks[sink] = w
	}
	acked, err := w.has(seq)
	if err != nil {
		return false, fmt.Errorf("event %d: %w", seq, err)
	}
	return acked, nil
}

func (s *settledLookup) close() {
	s.deliveries.Close()
	for _, w := range s.acks {
		w.close()
	}
}
