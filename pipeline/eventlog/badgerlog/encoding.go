package badgerlog

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// The log's records (package logpb) are encoded and decoded by the code
// protoc-gen-go-vtproto generates beside protoc-gen-go's (record_vtproto.pb.go):
// the same bytes as protobuf-go, without its reflection: a CallKaro event's
// record in ~0.9 µs and one allocation, against 1.7–2.9 µs and 13 (a
// throwaway benchmark, 2026-12-05; the UTF-8 check below adds ~0.5 µs).
//
// One difference is made up for here: protobuf-go refuses to encode a
// string field that is not UTF-8 (and to decode one), the generated code
// does not. A build before vtprotobuf reading such a record fails ("string
// field contains invalid UTF-8"): after a downgrade, Open would not even
// start on an event record with a dedup key cut from a Latin-1 header. So
// every record is checked as protobuf-go checks it, before it is written.

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

// encoded returns v, a record's MarshalVT, as proto.Marshal would: the same
// bytes, or the same refusal of a string that is not UTF-8, which t (the
// record's table below) finds. Called as eventUTF8.encoded(m.MarshalVT()),
// so that the record m, often built on the stack, does not escape to the
// heap through an interface. Acks has no string.
func (t *utf8Table) encoded(v []byte, err error) ([]byte, error) {
	if err == nil {
		err = t.check(v)
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

// The string fields of each record, from its descriptor.
var (
	eventUTF8    = utf8Fields((*logpb.Event)(nil).ProtoReflect().Descriptor())
	targetUTF8   = utf8Fields((*logpb.Target)(nil).ProtoReflect().Descriptor())
	deliveryUTF8 = utf8Fields((*logpb.Delivery)(nil).ProtoReflect().Descriptor())
)

// errInvalidUTF8 is protobuf-go's error (its text) for such a string.
var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// utf8Table says, by field number, which fields of a message are strings
// and which are messages with strings somewhere inside (map entries
// included). Its check walks an encoded message: bytes fields (bodies,
// payloads) are skipped by their length, strings are checked with
// utf8.Valid. Malformed bytes are the decoder's business: it stops there.
type utf8Table struct {
	fields []utf8Field
}

type utf8Field struct {
	name protoreflect.FullName
	str  bool
	msg  *utf8Table
}

func utf8Fields(md protoreflect.MessageDescriptor) *utf8Table {
	return buildUTF8Table(md, map[protoreflect.FullName]*utf8Table{})
}

func buildUTF8Table(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*utf8Table) *utf8Table {
	if t, ok := seen[md.FullName()]; ok {
		return t
	}
	t := &utf8Table{}
	seen[md.FullName()] = t
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		var f utf8Field
		switch fd.Kind() {
		case protoreflect.StringKind:
			f.str = fd.Syntax() == protoreflect.Proto3 // proto2 strings are not checked
		case protoreflect.MessageKind: // map entries too
			f.msg = buildUTF8Table(fd.Message(), seen)
		default:
			continue
		}
		f.name = fd.FullName()
		n := int(fd.Number())
		if n >= 1<<16 {
			continue // not in this repository's records; left unchecked
		}
		for len(t.fields) <= n {
			t.fields = append(t.fields, utf8Field{})
		}
		t.fields[n] = f
	}
	return t
}

func (t *utf8Table) check(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if int(num) >= len(t.fields) {
			continue
		}
		switch f := &t.fields[num]; {
		case f.str:
			if !utf8.Valid(v) {
				return fmt.Errorf("%w (%s)", errInvalidUTF8, f.name)
			}
		case f.msg != nil:
			if err := f.msg.check(v); err != nil {
				return err
			}
		}
	}
	return nil
}
