// Package jsoncompact compacts JSON exactly as encoding/json's Compact
// does, several times faster on the payloads webhooks carry.
package jsoncompact

import (
	"bytes"
	"encoding/json"
)

// maxDepth bounds the nesting the fast path follows; deeper documents go
// to encoding/json (whose own limit is 10,000).
const maxDepth = 512

// Append appends src to dst without insignificant whitespace, as
// json.Compact writes it, and returns the extended slice; on invalid JSON
// it returns dst unchanged and json.Compact's error. The fast path, a
// recursive-descent pass that copies as it checks, takes plain JSON; what
// it leaves (U+2028 and U+2029, which json.Compact escapes; nesting deeper
// than 512; anything invalid) goes to json.Compact itself. FuzzAppend
// holds the two to the same answer.
func Append(dst, src []byte) ([]byte, error) {
	c := compactor{src: src, dst: dst}
	if c.value() {
		c.space()
		if c.i == len(src) {
			return c.dst, nil
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, src); err != nil {
		return dst, err
	}
	return append(dst, buf.Bytes()...), nil
}

type compactor struct {
	src, dst []byte
	i, depth int
}

func (c *compactor) space() {
	i, src := c.i, c.src // in registers, not through c, in the loop
	for i < len(src) && isSpace[src[i]] {
		i++
	}
	c.i = i
}

// isSpace marks JSON whitespace.
var isSpace = [256]bool{' ': true, '\t': true, '\n': true, '\r': true}

// strStop marks the bytes a string's scan stops at: its end, an escape,
// a control character (invalid), and 0xE2, the first byte of U+2028 and
// U+2029.
var strStop = func() (t [256]bool) {
	for b := range 0x20 {
		t[b] = true
	}
	t['"'], t['\\'], t[0xE2] = true, true, true
	return t
}()

// value copies the value at c.i (after whitespace); false when it is not
// one the fast path takes.
func (c *compactor) value() bool {
	c.space()
	if c.i >= len(c.src) {
		return false
	}
	switch b := c.src[c.i]; {
	case b == '{':
		return c.object()
	case b == '[':
		return c.array()
	case b == '"':
		return c.str()
	case b == 't':
		return c.literal("true")
	case b == 'f':
		return c.literal("false")
	case b == 'n':
		return c.literal("null")
	case b == '-' || ('0' <= b && b <= '9'):
		return c.number()
	}
	return false
}

func (c *compactor) object() bool {
	return c.container('{', '}', func() bool {
		c.space()
		if c.i >= len(c.src) || c.src[c.i] != '"' || !c.str() {
			return false
		}
		c.space()
		if c.i >= len(c.src) || c.src[c.i] != ':' {
			return false
		}
		c.dst = append(c.dst, ':')
		c.i++
		return c.value()
	})
}

func (c *compactor) array() bool {
	return c.container('[', ']', c.value)
}

// container copies the object or array whose open byte is at c.i: its
// members, each read by member, between commas, up to its close byte.
func (c *compactor) container(open, close byte, member func() bool) bool {
	if c.depth++; c.depth > maxDepth {
		return false
	}
	c.dst = append(c.dst, open)
	c.i++
	c.space()
	if c.i < len(c.src) && c.src[c.i] == close {
		c.dst = append(c.dst, close)
		c.i++
		c.depth--
		return true
	}
	for {
		if !member() {
			return false
		}
		c.space()
		if c.i >= len(c.src) {
			return false
		}
		switch c.src[c.i] {
		case ',':
			c.dst = append(c.dst, ',')
			c.i++
		case close:
			c.dst = append(c.dst, close)
			c.i++
			c.depth--
			return true
		default:
			return false
		}
	}
}

// str copies the string whose opening quote is at c.i.
func (c *compactor) str() bool {
	start, src := c.i, c.src
	for i := start + 1; ; {
		for i < len(src) && !strStop[src[i]] {
			i++
		}
		if i >= len(src) {
			return false
		}
		switch b := src[i]; {
		case b == '"':
			i++
			c.dst = append(c.dst, src[start:i]...)
			c.i = i
			return true
		case b < 0x20:
			return false
		case b == '\\':
			if i+1 >= len(src) {
				return false
			}
			switch src[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+5 >= len(src) {
					return false
				}
				for _, h := range src[i+2 : i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				i += 6
			default:
				return false
			}
		case i+2 < len(src) && src[i+1] == 0x80 && (src[i+2] == 0xA8 || src[i+2] == 0xA9):
			return false // U+2028 or U+2029: json.Compact escapes them
		default: // 0xE2 starting another character
			i++
		}
	}
}

func (c *compactor) literal(lit string) bool {
	if len(c.src)-c.i < len(lit) || string(c.src[c.i:c.i+len(lit)]) != lit {
		return false
	}
	c.dst = append(c.dst, lit...)
	c.i += len(lit)
	return true
}

// number copies a number: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
func (c *compactor) number() bool {
	start := c.i
	if c.src[c.i] == '-' {
		c.i++
	}
	switch {
	case c.i < len(c.src) && c.src[c.i] == '0':
		c.i++
	case c.i < len(c.src) && '1' <= c.src[c.i] && c.src[c.i] <= '9':
		c.digits()
	default:
		return false
	}
	if c.i < len(c.src) && c.src[c.i] == '.' {
		c.i++
		if c.digits() == 0 {
			return false
		}
	}
	if c.i < len(c.src) && (c.src[c.i] == 'e' || c.src[c.i] == 'E') {
		c.i++
		if c.i < len(c.src) && (c.src[c.i] == '+' || c.src[c.i] == '-') {
			c.i++
		}
		if c.digits() == 0 {
			return false
		}
	}
	c.dst = append(c.dst, c.src[start:c.i]...)
	return true
}

func (c *compactor) digits() int {
	n := 0
	for c.i < len(c.src) && '0' <= c.src[c.i] && c.src[c.i] <= '9' {
		c.i++
		n++
	}
	return n
}
