package badgerlog

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/wal"
)

// storedRecords decodes every protobuf record of l with protobuf-go, as
// the builds before vtprotobuf read them (a downgrade), and returns the
// first error, naming the key.
func storedRecords(t *testing.T, l *DB) (n int, err error) {
	t.Helper()
	err = l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var m proto.Message
			switch {
			case bytes.HasPrefix(k, preEvent):
				m = &logpb.Event{}
			case bytes.HasPrefix(k, preRetry), bytes.HasPrefix(k, preDead), bytes.HasPrefix(k, preReady):
				m = &logpb.Target{}
			case bytes.HasPrefix(k, preDelivery):
				m = &logpb.Delivery{}
			case bytes.HasPrefix(k, preAcks):
				m = &logpb.Acks{}
			default:
				continue
			}
			if len(v) == 0 && bytes.HasPrefix(k, preReady) {
				continue
			}
			if err := proto.Unmarshal(v, m); err != nil {
				return &keyErr{k, err}
			}
			n++
			if e, ok := m.(*logpb.Event); ok && e.GetLength() > 0 {
				full, err := l.wal.AppendAt(nil, wal.Pos{Seg: e.GetSegment(), Off: e.GetOffset()}, int(e.GetLength()))
				if err != nil {
					return err
				}
				if err := proto.Unmarshal(full, &logpb.Event{}); err != nil {
					return &keyErr{append(k, " (full record)"...), err}
				}
				n++
			}
		}
		return nil
	})
	return n, err
}

type keyErr struct {
	key []byte
	err error
}

func (e *keyErr) Error() string { return string(e.key) + ": " + e.err.Error() }

// What the log writes, the build before vtprotobuf (protobuf-go) reads: a
// string that is not UTF-8 (a header value in Latin-1, a dedup key taken
// from such a header, a sink's error message cut inside a character) is
// refused, as protobuf-go refused to encode it, never stored where a
// downgraded pipelined would fail to decode it (Open decodes the event
// records from the pending mark on, and would not start).
func TestRecordsStayReadableByProtobufGo(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	ev := func(id string) pipeline.Event {
		return pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now(), Headers: map[string]string{"x-ok": "v"}, Body: []byte(`{}`)}
	}
	to := []pipeline.Target{{Sink: "a", Route: "r"}}
	bad := []pipeline.Entry{
		{Event: func() pipeline.Event { e := ev("latin1-header"); e.Headers["x-name"] = "caf\xe9"; return e }(), Targets: to},
		{Event: func() pipeline.Event { e := ev("latin1-key"); e.Headers["x-name\xe9"] = "v"; return e }(), Targets: to},
		{Event: ev("dedup"), DedupKey: "id-\xff", Targets: to},
		{Event: ev("dead-route"), Targets: []pipeline.Target{{Sink: "a", Route: "r", Err: "no route: \xe2\x82"}}},
	}
	refused := 0
	for _, e := range bad {
		if _, err := l.Append(ctx, []pipeline.Entry{e}); err != nil {
			refused++
			t.Logf("Append(%s) = %v", e.Event.ID, err)
		}
	}
	if _, err := l.Append(ctx, []pipeline.Entry{{Event: ev("good-1"), Targets: to}, {Event: ev("good-2"), Targets: to}}); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("a")
	ds, err := q.Fetch(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ss []pipeline.Settlement
	for _, d := range ds {
		s := pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503: \xe2\x82"}
		if d.Event.ID == "good-2" {
			s.Outcome = pipeline.Dead
		}
		ss = append(ss, s)
	}
	if err := q.Settle(ctx, ss); err != nil {
		refused++
		t.Logf("Settle = %v", err)
	}
	n, err := storedRecords(t, l)
	if err != nil {
		t.Fatalf("protobuf-go (the previous build) cannot read a record this build wrote: %v", err)
	}
	if n == 0 || refused == 0 {
		t.Fatalf("read %d records, %d writes refused: the test wrote nothing that could fail", n, refused)
	}
}

// encode is the encoder Append and the queues use for m's type.
func encode(m proto.Message) ([]byte, error) {
	switch m := m.(type) {
	case *logpb.Event:
		return eventUTF8.encoded(m.MarshalVT())
	case *logpb.Target:
		return targetUTF8.encoded(m.MarshalVT())
	case *logpb.Delivery:
		return deliveryUTF8.encoded(m.MarshalVT())
	case *logpb.Acks:
		return m.MarshalVT()
	}
	panic(fmt.Sprintf("no encoder for %T", m))
}

// FuzzEncode holds the encoders (vtprotobuf's code plus the UTF-8 check) to
// proto.Marshal's answer for every record type: both refuse the same
// strings, and what encode writes protobuf-go reads as the same message
// (and the reverse, through decode). An event's record is also written as
// Append writes it, meta then rest, and read back as one message.
func FuzzEncode(f *testing.F) {
	f.Add("id-1", "content-type", "application/json", "key", "503 from sink", []byte(`{"a":1}`), []byte(`{}`))
	f.Add("", "", "", "", "", []byte{}, []byte(nil))
	f.Add("id", "x-name", "caf\xe9", "k\xff", "cut \xe2\x82", []byte{0xff, 0}, []byte{0xe9})
	f.Fuzz(func(t *testing.T, id, hk, hv, key, errText string, body, payload []byte) {
		ev := &logpb.Event{
			Id: id, Source: "src", ReceivedAtUnixNano: 1764950000123456789, Headers: map[string]string{hk: hv, "x": "y"},
			Body: body, Auth: "hmac", Sinks: []string{"a", hk}, DedupKey: key, Traceparent: hv, Tracestate: "",
			Routes:   []*logpb.Route{{Sink: "a", Route: id}, {}},
			Payloads: []*logpb.Payload{{Sink: "a", Payload: payload}, {Sink: hk}},
		}
		msgs := []proto.Message{
			ev,
			&logpb.Target{Route: id, Payload: payload, Attempts: 3, LastError: errText, FailedAtUnixNano: -1},
			&logpb.Delivery{Route: key, State: logpb.Delivery_RETRYING, Attempts: 2, LastError: errText,
				Failures: []*logpb.Delivery_Failure{{Attempt: 1, Error: errText}, {Attempt: 2, Error: hv}}},
			&logpb.Acks{AtUnixNano: 5, Deltas: []uint64{1, 1 << 40, 0}},
		}
		for _, m := range msgs {
			want, pbErr := proto.Marshal(m)
			got, vtErr := encode(m)
			if (pbErr == nil) != (vtErr == nil) {
				t.Fatalf("%T: proto.Marshal: %v; encode: %v", m, pbErr, vtErr)
			}
			if pbErr != nil {
				continue
			}
			a, b := m.ProtoReflect().New().Interface(), m.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(got, a); err != nil {
				t.Fatalf("%T: protobuf-go cannot read encode's bytes: %v", m, err)
			}
			if err := decode(want, b.(record)); err != nil {
				t.Fatalf("%T: decode cannot read proto.Marshal's bytes: %v", m, err)
			}
			if !proto.Equal(a, m) || !proto.Equal(b, m) {
				t.Fatalf("%T: encoded %v, read back %v and %v", m, m, a, b)
			}
		}
		// As Append and setEvent write it: meta, then rest.
		rest := &logpb.Event{Headers: ev.Headers, Body: ev.Body, Payloads: ev.Payloads}
		meta := proto.Clone(ev).(*logpb.Event)
		meta.Headers, meta.Body, meta.Payloads = nil, nil, nil
		mv, err := encode(meta)
		if err != nil {
			return // refused above, for ev
		}
		rv := make([]byte, rest.SizeVT())
		if _, err := rest.MarshalToSizedBufferVT(rv); err != nil {
			t.Fatal(err)
		}
		if eventUTF8.check(rv) != nil {
			return
		}
		for _, read := range []func([]byte, *logpb.Event) error{
			func(b []byte, m *logpb.Event) error { return proto.Unmarshal(b, m) },
			func(b []byte, m *logpb.Event) error { return decode(b, m) },
		} {
			full := &logpb.Event{}
			if err := read(append(mv, rv...), full); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(full, ev) {
				t.Fatalf("meta + rest read as %v, want %v", full, ev)
			}
		}
	})
}

// A record written by a newer build, with a field this one does not know,
// keeps it when this build reads and writes the record again (hold does,
// with a queue entry), as with protobuf-go.
func TestUnknownFieldsSurviveReencode(t *testing.T) {
	future := protowire.AppendTag(nil, 99, protowire.BytesType)
	future = protowire.AppendString(future, "a field of a newer build")
	future = protowire.AppendTag(future, 98, protowire.VarintType)
	future = protowire.AppendVarint(future, 7)
	for _, m := range []proto.Message{
		&logpb.Target{Route: "r", Payload: []byte("{}"), Attempts: 2, LastError: "503"},
		&logpb.Event{Id: "id", Headers: map[string]string{"a": "b"}, Routes: []*logpb.Route{{Sink: "s"}}},
		&logpb.Delivery{Route: "r", Failures: []*logpb.Delivery_Failure{{Attempt: 1}}},
	} {
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		v = append(v, future...)
		want := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(v, want); err != nil {
			t.Fatal(err)
		}
		if len(want.ProtoReflect().GetUnknown()) == 0 {
			t.Fatalf("%T: protobuf-go kept no unknown field: the test proves nothing", m)
		}
		mine := m.ProtoReflect().New().Interface()
		if err := decode(v, mine.(record)); err != nil {
			t.Fatal(err)
		}
		again, err := encode(mine)
		if err != nil {
			t.Fatal(err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(again, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("%T: read and written again as %v, want %v (unknown %q)", m, got, want, want.ProtoReflect().GetUnknown())
		}
	}
}
