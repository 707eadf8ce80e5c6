package sql

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// span is where a value lies in a document: p[start:end]. A zero span
// (start == end) is a missing value; a JSON value is never empty.
type span struct{ start, end int }

// extractor finds the values at several dot paths of a JSON document in
// one pass over it: the paths make a tree (data.from and data.to share
// data), and each object or array on the way is scanned once, whatever
// the number of paths that go through it.
//
// It answers exactly what decoding the whole document (as encoding/json
// decodes it) and following each path would: object keys compared after
// unescaping, the last of duplicate keys wins, array indexes as
// strconv.Atoi reads them (FuzzValueAt and FuzzExtractor hold it to that).
// Only the values at the ends of the paths are decoded, by decodeValue;
// the rest of the document is skipped over.
//
// An extractor is not safe for concurrent use (its scratch space).
type extractor struct {
	root  pathNode
	found []span // scratch: one per node, the bounds of its key's last member or element
}

// pathNode is one step of the paths: the member (or element) key of its
// parent, its own children, and the paths that end at it.
type pathNode struct {
	id       int    // index in extractor.found
	key      string // member name
	index    int    // key as an array index, or -1 when it is none
	ends     []int  // indexes (in the paths given to newExtractor) of the paths ending here
	children []*pathNode
}

// newExtractor returns an extractor of paths (each one or more keys).
func newExtractor(paths [][]string) *extractor {
	x := &extractor{root: pathNode{index: -1}}
	nodes := 1
	for j, path := range paths {
		n := &x.root
		for _, k := range path {
			var next *pathNode
			for _, c := range n.children {
				if c.key == k {
					next = c
					break
				}
			}
			if next == nil {
				next = &pathNode{id: nodes, key: k, index: -1}
				if i, err := strconv.Atoi(k); err == nil && i >= 0 {
					next.index = i
				}
				nodes++
				n.children = append(n.children, next)
			}
			n = next
		}
		n.ends = append(n.ends, j)
	}
	x.found = make([]span, nodes)
	return x
}

// find sets out[j] to the span of the value at path j in the valid JSON
// document p, or to a zero span when the path is missing. out has one
// entry per path.
func (x *extractor) find(p []byte, out []span) {
	clear(out)
	start := space(p, 0)
	x.walk(p, &x.root, span{start, skip(p, start)}, out)
}

// walk records v, the value at node n, for the paths ending at n and
// follows n's children into it.
func (x *extractor) walk(p []byte, n *pathNode, v span, out []span) {
	for _, j := range n.ends {
		out[j] = v
	}
	if len(n.children) == 0 || v.start >= v.end {
		return
	}
	for _, c := range n.children {
		x.found[c.id] = span{}
	}
	switch p[v.start] {
	case '{':
		x.members(p, n, v.start)
	case '[':
		x.elements(p, n, v.start)
	default:
		return
	}
	for _, c := range n.children {
		if f := x.found[c.id]; f.start < f.end {
			x.walk(p, c, f, out)
		}
	}
}

// members scans the object at i once and records, for each child of n,
// the value of the last member named its key.
func (x *extractor) members(p []byte, n *pathNode, i int) {
	i = space(p, i+1) // after '{'
	if i < len(p) && p[i] == '}' {
		return
	}
	for i < len(p) {
		ks := i
		ke := skip(p, ks)    // the key, quotes included
		i = space(p, ke) + 1 // after ':'
		vs := space(p, i)
		ve := skip(p, vs)
		key, ok := p[ks+1:ke-1], true
		if !plainASCII(key) {
			// As encoding/json unescapes it (invalid UTF-8 becomes
			// U+FFFD): rare, so decoded once for all children.
			var s string
			ok = json.Unmarshal(p[ks:ke], &s) == nil
			key = []byte(s)
		}
		for _, c := range n.children {
			if ok && string(key) == c.key {
				x.found[c.id] = span{vs, ve} // on, for a later duplicate
			}
		}
		i = space(p, ve)
		if i >= len(p) || p[i] == '}' {
			break
		}
		i = space(p, i+1) // after ','
	}
}

// elements scans the array at i, up to the last index a child of n
// names, and records each such child's element.
func (x *extractor) elements(p []byte, n *pathNode, i int) {
	last := -1
	for _, c := range n.children {
		last = max(last, c.index)
	}
	if last < 0 {
		return
	}
	i = space(p, i+1) // after '['
	if i < len(p) && p[i] == ']' {
		return
	}
	for j := 0; i < len(p) && j <= last; j++ {
		vs := i
		ve := skip(p, vs)
		for _, c := range n.children {
			if c.index == j {
				x.found[c.id] = span{vs, ve}
			}
		}
		i = space(p, ve)
		if i >= len(p) || p[i] == ']' {
			break
		}
		i = space(p, i+1) // after ','
	}
}

// decodeValue decodes the JSON value raw (the text of a span) as
// encoding/json decodes it with UseNumber (objects map[string]any, arrays
// []any, numbers json.Number). Strings without escapes and numbers are
// slices of raw, not copies.
func decodeValue(raw string) (any, error) {
	// The common scalars without a decoder: the same values it makes.
	switch c := raw[0]; {
	case c == 'n':
		return nil, nil
	case c == 't':
		return true, nil
	case c == 'f':
		return false, nil
	case c == '-' || ('0' <= c && c <= '9'):
		return json.Number(raw), nil
	case c == '"' && plainASCII(raw[1:len(raw)-1]):
		return raw[1 : len(raw)-1], nil
	}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// plainASCII reports whether the inside of a JSON string is its value as
// it is: no escapes, nothing encoding/json would replace.
func plainASCII[T string | []byte](b T) bool {
	for i := range len(b) {
		if c := b[i]; c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// space returns the index of the first byte at or after i that is not
// JSON whitespace.
func space(p []byte, i int) int {
	for i < len(p) {
		switch p[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skip returns the index just after the value starting at i.
func skip(p []byte, i int) int {
	if i >= len(p) {
		return i
	}
	switch p[i] {
	case '"':
		return str(p, i)
	case '{', '[':
		depth := 0
		for i < len(p) {
			switch p[i] {
			case '"':
				i = str(p, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	// A number, true, false or null: up to the next delimiter.
	for i < len(p) {
		switch p[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// str returns the index just after the string whose opening quote is at
// i. It jumps from quote to quote (bytes.IndexByte), and a quote ends the
// string when an even number of backslashes precede it.
func str(p []byte, i int) int {
	open := i
	for i++; i < len(p); i++ {
		q := bytes.IndexByte(p[i:], '"')
		if q < 0 {
			return len(p)
		}
		i += q
		b := i
		for b > open+1 && p[b-1] == '\\' {
			b--
		}
		if (i-b)%2 == 0 {
			return i + 1
		}
	}
	return i
}
