package wire

import (
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// protobuf-go refuses to encode a string field that is not UTF-8 and to
// decode one; vtprotobuf's generated code does neither. The codec checks
// what it writes and reads as protobuf-go does, so that a plugin or host
// built before it is never sent a message it cannot read, and the host
// never takes from a plugin a string its event log refuses to store
// (badgerlog's encoding.go has the same check).
//
// utf8Table (its build and its check) is a copy of the one in
// pipeline/eventlog/badgerlog/encoding.go (another module): keep the two
// the same. Here the tables are cached by message name, as the codec sees
// any message of sdk/proto.

// errInvalidUTF8 is protobuf-go's error (its text) for such a string.
var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// checkUTF8 returns an error naming the first string field of the message
// encoded in b (described by md, nested messages and map entries
// included) that is not UTF-8. It walks the encoded bytes: bytes fields
// (bodies, payloads) are skipped by their length, strings are checked with
// utf8.Valid. Malformed bytes are the decoder's business: it stops there.
func checkUTF8(b []byte, md protoreflect.MessageDescriptor) error {
	return utf8Fields(md).check(b)
}

// utf8Table says, by field number, which fields of a message are strings
// and which are messages with strings somewhere inside.
type utf8Table struct {
	fields []utf8Field
}

type utf8Field struct {
	name protoreflect.FullName
	str  bool
	msg  *utf8Table
}

var utf8Tables sync.Map // protoreflect.FullName -> *utf8Table

func utf8Fields(md protoreflect.MessageDescriptor) *utf8Table {
	if t, ok := utf8Tables.Load(md.FullName()); ok {
		return t.(*utf8Table)
	}
	t := buildUTF8Table(md, map[protoreflect.FullName]*utf8Table{})
	utf8Tables.Store(md.FullName(), t)
	return t
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
