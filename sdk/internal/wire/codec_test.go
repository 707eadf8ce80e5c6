package wire

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/pipelined/pipelined/sdk/proto"
)

// batch is a DeliverRequest with every field of an event set, n events of
// a body of size bytes.
func batch(n, size int) *pb.DeliverRequest {
	r := &pb.DeliverRequest{}
	for i := range n {
		r.Events = append(r.Events, &pb.Event{
			Id: fmt.Sprintf("01a24786-1751-7903-bda0-%012d", i), Source: "callkaro", Route: "all-calls",
			ReceivedAt:   timestamppb.New(time.Unix(1764950000, int64(i))),
			Headers:      map[string]string{"content-type": "application/json", "x-signature": "v1,abc"},
			Body:         bytes.Repeat([]byte{'{', byte('a' + i%26), '}'}, size/3),
			Payload:      []byte(`{"to":"ops"}`),
			Attempt:      uint32(i%3 + 1),
			TraceContext: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		})
	}
	return r
}

// The codec writes what protobuf-go reads and reads what it writes, for
// messages under and over gRPC's pooling threshold, and for a message
// without generated vtprotobuf methods (go-plugin's share the connection).
func TestCodecIsProtobuf(t *testing.T) {
	msgs := []proto.Message{
		batch(1, 30),
		batch(200, 1200),
		&pb.DeliverResponse{Results: []*pb.Result{
			{Outcome: pb.Outcome_OUTCOME_DELIVERED},
			{Outcome: pb.Outcome_OUTCOME_RETRY, RetryAfter: durationpb.New(3 * time.Second), Error: "429 from the API"},
		}},
		&pb.ConfigureRequest{Sink: "db", Config: []byte(`{"dsn":"x"}`)},
		timestamppb.New(time.Unix(1764950000, 7)), // no VT methods: gRPC's codec
	}
	for _, m := range msgs {
		t.Run(fmt.Sprintf("%T", m), func(t *testing.T) {
			out, err := Codec.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got := m.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(out.Materialize(), got); err != nil {
				t.Fatalf("protobuf-go cannot read what the codec wrote: %v", err)
			}
			if !proto.Equal(got, m) {
				t.Fatalf("codec wrote %v, protobuf-go read it as %v", m, got)
			}
			out.Free()

			want, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			back := m.ProtoReflect().New().Interface()
			if err := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, back); err != nil {
				t.Fatalf("the codec cannot read what protobuf-go wrote: %v", err)
			}
			if !proto.Equal(back, m) {
				t.Fatalf("protobuf-go wrote %v, the codec read it as %v", m, back)
			}
		})
	}
}

// What the codec decodes is the message alone: it is reset first (as
// proto.Unmarshal does) and keeps no byte of the buffer, which gRPC reuses
// once Unmarshal returns.
func TestCodecUnmarshalResetsAndCopies(t *testing.T) {
	want := batch(3, 30)
	wire, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got := batch(5, 60) // a message with other events in it
	if err := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
		t.Fatal(err)
	}
	clear(wire)
	if !proto.Equal(got, want) {
		t.Fatalf("decoded %d events (%v), want the 3 sent (%v)", len(got.Events), got, want)
	}
}

// A malformed message is an error that names the message, not a panic.
func TestCodecRefusesGarbage(t *testing.T) {
	bad := []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f} // events field, length past the end
	err := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &pb.DeliverRequest{})
	if err == nil {
		t.Fatal("decoded a truncated message without an error")
	}
	t.Log(err)
}

// BenchmarkCodec compares the codec with gRPC's (protobuf-go's reflection)
// on a batch of 250 events of a 1,143-byte body, the CallKaro payload's
// size, per event.
func BenchmarkCodec(b *testing.B) {
	const n = 250
	req := batch(n, 1143)
	wire, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		fn   func() error
	}{
		{"marshal/vtproto", func() error { out, err := Codec.Marshal(req); out.Free(); return err }},
		{"marshal/protobuf-go", func() error { out, err := fallback.Marshal(req); out.Free(); return err }},
		{"unmarshal/vtproto", func() error {
			return Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &pb.DeliverRequest{})
		}},
		{"unmarshal/protobuf-go", func() error {
			return fallback.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &pb.DeliverRequest{})
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.fn(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}

// FuzzCodec holds the codec to gRPC's protobuf codec (protobuf-go) for
// messages of any strings and bytes: both refuse the same (a string that
// is not UTF-8, either way), and each reads what the other writes as the
// same message. (Run from sdk/: make fuzz runs the root module's targets.)
func FuzzCodec(f *testing.F) {
	f.Add("01a24786", "x-signature", "v1,abc", "429 from the API", []byte(`{"a":1}`), []byte(nil))
	f.Add("", "", "", "", []byte{}, []byte{})
	f.Add("id", "x-name", "caf\xe9", "cut \xe2\x82", []byte{0xff}, []byte{0xe9})
	f.Fuzz(func(t *testing.T, id, hk, hv, errText string, body, payload []byte) {
		ev := batch(1, 30).Events[0]
		ev.Id, ev.Route, ev.Body, ev.Payload = id, hv, body, payload
		ev.Headers[hk] = hv
		ev.TraceContext[hv] = hk
		msgs := []proto.Message{
			&pb.DeliverRequest{Events: []*pb.Event{ev, {}, {Headers: map[string]string{"": ""}}}},
			&pb.DeliverResponse{Results: []*pb.Result{{Outcome: pb.Outcome_OUTCOME_PERMANENT, Error: errText}, {}}},
			&pb.DescribeResponse{Summary: hk, Fields: []*pb.Field{{Name: hv, Doc: errText, Required: true}}},
			&pb.ConfigureRequest{Sink: hk, Config: body},
		}
		for _, m := range msgs {
			got, vtErr := Codec.Marshal(m)
			want, pbErr := fallback.Marshal(m)
			if (vtErr == nil) != (pbErr == nil) {
				t.Fatalf("%T: codec: %v; gRPC's: %v", m, vtErr, pbErr)
			}
			if pbErr != nil {
				// And a peer's bytes with such a string are refused by both.
				raw, err := proto.MarshalOptions{}.Marshal(m) // refuses too: write it without the check
				if err == nil {
					t.Fatalf("%T: proto.Marshal took what gRPC's codec refused", m)
				}
				if raw, err = vtMarshal(m); err != nil {
					t.Fatal(err)
				}
				a, b := m.ProtoReflect().New().Interface(), m.ProtoReflect().New().Interface()
				if Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, a) == nil ||
					fallback.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, b) == nil {
					t.Fatalf("%T: a string not UTF-8 read by the codec or gRPC's", m)
				}
				continue
			}
			a, b := m.ProtoReflect().New().Interface(), m.ProtoReflect().New().Interface()
			if err := fallback.Unmarshal(got, a); err != nil {
				t.Fatalf("%T: gRPC's codec cannot read the codec's bytes: %v", m, err)
			}
			if err := Codec.Unmarshal(want, b); err != nil {
				t.Fatalf("%T: the codec cannot read gRPC's bytes: %v", m, err)
			}
			if !proto.Equal(a, m) || !proto.Equal(b, m) {
				t.Fatalf("%T: sent %v, read %v and %v", m, m, a, b)
			}
			got.Free()
			want.Free()
		}
	})
}

// vtMarshal encodes m with its generated code alone, unchecked: what a
// peer that does not check strings sends.
func vtMarshal(m proto.Message) ([]byte, error) {
	v := m.(vtMessage)
	b := make([]byte, v.SizeVT())
	_, err := v.MarshalToSizedBufferVT(b)
	return b, err
}

// A string that is not UTF-8 is refused in a message above gRPC's pooling
// threshold too (the buffer goes back to the pool), as gRPC's codec does.
func TestCodecRefusesInvalidUTF8FromThePool(t *testing.T) {
	req := batch(200, 1200)
	req.Events[199].TraceContext["tracestate"] = "vendor=caf\xe9"
	if size := proto.Size(req); mem.IsBelowBufferPoolingThreshold(size) {
		t.Fatalf("a message of %d bytes is below the pooling threshold: the test proves nothing", size)
	}
	if _, err := fallback.Marshal(req); err == nil {
		t.Fatal("gRPC's codec took a string that is not UTF-8: the test's premise is wrong")
	}
	out, err := Codec.Marshal(req)
	if err == nil {
		out.Free()
		t.Fatal("the codec encoded a string that is not UTF-8")
	}
	t.Log(err)
}
