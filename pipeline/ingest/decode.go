package ingest

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// decodeFast decodes body into what [Decode] returns (objects as
// map[string]any, arrays as []any, numbers as [numberOf] says), in one
// pass and with few allocations: the body is copied once into a string
// that every key and unescaped string value is a slice of, each map and
// slice is made at its final size, and strings and numbers are boxed into
// interfaces from shared slabs instead of one allocation each. It reports
// false for anything it does not take on its own (a syntax error, a
// nesting deeper than [maxFastDepth]); Decode then asks encoding/json,
// which says exactly what is wrong. FuzzDecode checks
// that both agree on every input. It also returns the body's [shape]: how
// deep its arrays and objects nest, what [Depth] says of a valid body, so
// that ingest scans the body once, and a key that one of its objects has
// twice.
func decodeFast(body []byte) (any, shape, bool) {
	return decodeString(string(body))
}

// decodeOwned is [decodeFast] without the copy: the strings of the result
// are slices of body itself, so body must never be written again while
// they live. Ingest's bodies are such: read into a buffer of their own,
// then only read (verified, stored, cached by the log, which copies what
// it keeps), never written.
func decodeOwned(body []byte) (any, shape, bool) {
	return decodeString(unsafe.String(unsafe.SliceData(body), len(body)))
}

// shape is what decoding a body learnt of it besides its value.
type shape struct {
	// depth is how deep the body's arrays and objects nest.
	depth int
	// dup is the first key found twice in one object, when dupped (a
	// key may be ""). The value is the last one, as encoding/json has it.
	dup    string
	dupped bool
	// notText is set when a string holds a byte that is not UTF-8 or a \u
	// escape in the surrogates' range: notUTF8 then says whether the body
	// is text; a body without either is, and need not be read again.
	notText bool
}

func decodeString(s string) (any, shape, bool) {
	d := decoderPool.Get().(*decoder)
	d.s, d.i, d.shape = s, 0, shape{}
	v, ok := d.value(0)
	if ok {
		d.space()
		ok = d.i == len(d.s)
	}
	sh := d.shape
	d.release()
	if !ok {
		return nil, shape{}, false
	}
	return v, sh, true
}

// maxFastDepth bounds decodeFast's recursion; deeper bodies go to
// encoding/json (ingest refuses anything deeper than [MaxDepth] before).
const maxFastDepth = 1000

// slab is how many strings or numbers one slab allocation boxes.
const slab = 32

var decoderPool = sync.Pool{New: func() any { return new(decoder) }}

// decoder is one decodeFast call's state; its scratch stacks are reused
// from call to call.
type decoder struct {
	s string
	i int
	// shape holds the deepest nesting of arrays and objects seen and the
	// first duplicate key.
	shape shape
	// keys and vals hold the members of the objects and arrays being
	// decoded, innermost last, until each is complete.
	keys []string
	vals []any
	// cells is the current slab that strings and numbers are boxed from.
	cells []cell
}

// cell holds one boxed string or number (one slab for both: one
// allocation, not one for each kind).
type cell struct {
	s string
	f float64
}

// release clears what d refers to and returns it to the pool.
func (d *decoder) release() {
	clear(d.keys[:cap(d.keys)])
	clear(d.vals[:cap(d.vals)])
	d.s, d.keys, d.vals, d.cells = "", d.keys[:0], d.vals[:0], nil
	decoderPool.Put(d)
}

func (d *decoder) space() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) value(depth int) (any, bool) {
	d.space()
	if d.i >= len(d.s) {
		return nil, false
	}
	switch c := d.s[d.i]; {
	case c == '{':
		return d.object(depth + 1)
	case c == '[':
		return d.array(depth + 1)
	case c == '"':
		s, ok := d.string()
		if !ok {
			return nil, false
		}
		return d.boxString(s), true
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	}
	return nil, false
}

func (d *decoder) literal(lit string) bool {
	if len(d.s)-d.i < len(lit) || d.s[d.i:d.i+len(lit)] != lit {
		return false
	}
	d.i += len(lit)
	return true
}

func (d *decoder) object(depth int) (any, bool) {
	if depth > maxFastDepth {
		return nil, false
	}
	d.shape.depth = max(d.shape.depth, depth)
	d.i++ // {
	base := len(d.keys)
	d.space()
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		return map[string]any{}, true
	}
	for more := true; more; {
		d.space()
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return nil, false
		}
		k, ok := d.string()
		if !ok {
			return nil, false
		}
		d.space()
		if d.i >= len(d.s) || d.s[d.i] != ':' {
			return nil, false
		}
		d.i++
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		d.keys = append(d.keys, k)
		d.vals = append(d.vals, v)
		if more, ok = d.next('}'); !ok {
			return nil, false
		}
	}
	// vals holds the values of every open array and object; this
	// object's are the last len(d.keys)-base of them.
	n := len(d.keys) - base
	vbase := len(d.vals) - n
	m := make(map[string]any, n)
	for j := range n {
		m[d.keys[base+j]] = d.vals[vbase+j]
	}
	if len(m) < n && !d.shape.dupped {
		d.shape.dup, d.shape.dupped = firstDup(d.keys[base:]), true
	}
	clear(d.vals[vbase:])
	d.keys, d.vals = d.keys[:base], d.vals[:vbase]
	return m, true
}

// firstDup returns the first of keys that an earlier one repeats; it is
// called only when there is one.
func firstDup(keys []string) string {
	seen := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		if _, ok := seen[k]; ok {
			return k
		}
		seen[k] = struct{}{}
	}
	return ""
}

func (d *decoder) array(depth int) (any, bool) {
	if depth > maxFastDepth {
		return nil, false
	}
	d.shape.depth = max(d.shape.depth, depth)
	d.i++ // [
	base := len(d.vals)
	d.space()
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
		return []any{}, true
	}
	for more := true; more; {
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		d.vals = append(d.vals, v)
		if more, ok = d.next(']'); !ok {
			return nil, false
		}
	}
	a := make([]any, len(d.vals)-base)
	copy(a, d.vals[base:])
	clear(d.vals[base:])
	d.vals = d.vals[:base]
	return a, true
}

// next reads what follows a member of an array or object: a comma (more
// is true, another member follows) or the close that ends it.
func (d *decoder) next(close byte) (more, ok bool) {
	d.space()
	if d.i >= len(d.s) {
		return false, false
	}
	switch d.s[d.i] {
	case ',':
		d.i++
		return true, true
	case close:
		d.i++
		return false, true
	}
	return false, false
}

// string decodes the string at d.i (its opening quote). One without
// escapes in valid UTF-8 is a slice of d.s, as encoding/json would return
// it; anything else is unquoted by encoding/json itself, so invalid UTF-8
// and surrogates come out exactly as they do there.
func (d *decoder) string() (string, bool) {
	start := d.i
	d.i++
	plain := true
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			if plain {
				return d.s[start+1 : d.i-1], true
			}
			var s string
			if json.Unmarshal([]byte(d.s[start:d.i]), &s) != nil {
				return "", false
			}
			return s, true
		case c == '\\':
			plain = false
			if d.i+3 < len(d.s) && d.s[d.i+1] == 'u' && d.s[d.i+2]|0x20 == 'd' && strings.IndexByte("89abcdefABCDEF", d.s[d.i+3]) >= 0 {
				d.shape.notText = true // \ud800-\udfff: half of a pair, or lone
			}
			d.i += 2
		case c < 0x20:
			return "", false
		case c < utf8.RuneSelf:
			d.i++
		default:
			r, size := utf8.DecodeRuneInString(d.s[d.i:])
			if r == utf8.RuneError && size == 1 {
				plain = false
				d.shape.notText = true
			}
			d.i += size
		}
	}
	return "", false
}

// number decodes a JSON number as [numberOf] says, the float64s and the
// texts boxed from d's slab.
func (d *decoder) number() (any, bool) {
	start := d.i
	s := d.s
	i := d.i
	if s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return nil, false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return nil, false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	d.i = i
	text := s[start:i]
	if n, ok := exactInt(text); ok {
		return n, true
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return d.boxString(text), true
	}
	return d.boxFloat(f), true
}

// minInexact is the length of the shortest JSON integer that a float64
// may not hold exactly: 2⁵³+1 has 16 digits.
const minInexact = 16

// exactInt returns the JSON number text as an int64 when it is an integer
// that no float64 holds exactly but an int64 does (see [numberOf]).
func exactInt(text string) (int64, bool) {
	if len(text) < minInexact || strings.ContainsAny(text, ".eE") {
		return 0, false
	}
	n, err := strconv.ParseInt(text, 10, 64)
	return n, err == nil && (n > 1<<53 || n < -(1<<53))
}

// numberOf is what a JSON number (its text) is to rules: a float64,
// except an integer that no float64 holds exactly but an int64 does (from
// 2⁵³ up in size: a 64-bit id), which is that int64, so that two such ids
// never read as one number (rounded to a float64, 1234567890123456789 and
// 1234567890123456790 would be the same dedup key), and expr compares and
// computes with it as with any int. Beyond int64 it is a float64 again:
// expr's uint64 wraps, and a json.Number is no number to it. A number out
// of float64's range is its text, a string (as a json.Number it would
// reach the JSON Schema library, which panics on an exponent in the
// millions).
func numberOf(text string) any {
	if n, ok := exactInt(text); ok {
		return n
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return text
	}
	return f
}

// eface is the layout of an interface value of the empty interface.
type eface struct {
	typ, data unsafe.Pointer
}

var (
	stringType = func() unsafe.Pointer { var v any = ""; return (*eface)(unsafe.Pointer(&v)).typ }()
	floatType  = func() unsafe.Pointer { var v any = 0.0; return (*eface)(unsafe.Pointer(&v)).typ }()
)

// boxString returns s as an any whose string header lives in d's current
// slab: what `any(s)` is, without an allocation of its own. The slab is
// never written again once a header is in it, as Go requires of the value
// an interface refers to.
func (d *decoder) boxString(s string) any {
	if s == "" {
		return ""
	}
	c := d.cell()
	c.s = s
	var v any
	e := (*eface)(unsafe.Pointer(&v))
	e.typ, e.data = stringType, unsafe.Pointer(&c.s)
	return v
}

// boxFloat is boxString for a float64.
func (d *decoder) boxFloat(f float64) any {
	c := d.cell()
	c.f = f
	var v any
	e := (*eface)(unsafe.Pointer(&v))
	e.typ, e.data = floatType, unsafe.Pointer(&c.f)
	return v
}

// cell returns the next cell of the current slab, making a new slab when
// it is full. A cell is written once, before it is boxed, and never again.
func (d *decoder) cell() *cell {
	if len(d.cells) == cap(d.cells) {
		d.cells = make([]cell, 0, min(slab, len(d.s)/16+1))
	}
	d.cells = d.cells[:len(d.cells)+1]
	return &d.cells[len(d.cells)-1]
}
