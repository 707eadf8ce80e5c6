package badgerlog

// The log's records (package logpb) are encoded and decoded by the code
// protoc-gen-go-vtproto generates beside protoc-gen-go's (record_vtproto.pb.go):
// the same bytes as protobuf-go, without its reflection (a quarter of the CPU
// to encode an event's record, and one allocation; docs/performance.md).

// record is a logpb message with its generated decoder.
type record interface {
	Reset()
	UnmarshalVT([]byte) error
}

// decode decodes v into m, reset first as proto.Unmarshal does. What m
// keeps is copied out of v, which Badger and the read buffers reuse.
func decode(v []byte, m record) error {
	m.Reset()
	return m.UnmarshalVT(v)
}
