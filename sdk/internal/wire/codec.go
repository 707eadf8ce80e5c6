package wire

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Codec is the gRPC codec of both ends of the sink protocol. The messages of
// sdk/proto are encoded and decoded by their generated vtprotobuf methods
// (sink_vtproto.pb.go): the bytes protobuf-go writes, without its
// reflection, and strings refused when not UTF-8 as protobuf-go refuses
// them (utf8.go) — for a batch of CallKaro events, UTF-8 check included,
// about 0.4× the CPU and one allocation to encode, about the same CPU and
// three fifths of the allocations to decode (BenchmarkCodec;
// docs/performance.md). Any other message goes to gRPC's own protobuf
// codec: go-plugin's services (health, stdio, the broker) share the
// connection. Its name is gRPC's, "proto", so a plugin or host built before
// it reads what it writes.
var Codec encoding.CodecV2 = codec{}

// vtMessage is what protoc-gen-go-vtproto generates for a message.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
	Reset()
	ProtoReflect() protoreflect.Message
}

// fallback is gRPC's protobuf codec, registered by the package imported
// above.
var fallback = encoding.GetCodecV2(grpcproto.Name)

type codec struct{}

func (codec) Name() string { return grpcproto.Name }

// Marshal encodes v into one buffer, from gRPC's pool when it is large, as
// gRPC's codec does.
func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return fallback.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		b := make([]byte, size)
		if err := encode(m, b); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if err := encode(m, (*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// encode writes m into b, of exactly m's size, refusing a string that is not
// UTF-8 as protobuf-go does (utf8.go).
func encode(m vtMessage, b []byte) error {
	_, err := m.MarshalToSizedBufferVT(b)
	if err == nil {
		err = checkUTF8(b, m.ProtoReflect().Descriptor())
	}
	if err != nil {
		return fmt.Errorf("encode %T: %w", m, err)
	}
	return nil
}

// Unmarshal decodes data into v, reset first as proto.Unmarshal does. What
// v keeps is copied out of data, which gRPC frees when this returns.
func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(vtMessage)
	if !ok {
		return fallback.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	m.Reset()
	if err := m.UnmarshalVT(buf.ReadOnlyData()); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	if err := checkUTF8(buf.ReadOnlyData(), m.ProtoReflect().Descriptor()); err != nil { // as protobuf-go (utf8.go)
		m.Reset()
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}
