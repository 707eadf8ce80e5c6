package sql

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// valueAt returns the value at path in the JSON document p, decoded as
// encoding/json decodes it with UseNumber (objects map[string]any, arrays
// []any, numbers json.Number), or nil when the path is missing or leads to
// null. p must be valid JSON (makeRow has checked it).
//
// Only the value at the end of the path is decoded: the rest of the
// document is skipped over, byte by byte, which costs a fraction of
// decoding all of it into maps when a few columns are mapped. It answers
// exactly what decoding the whole document and following the path would:
// object keys compared after unescaping, the last of duplicate keys wins,
// array indexes as strconv.Atoi reads them (FuzzValueAt holds the two to
// the same answer).
func valueAt(p []byte, path []string) (any, error) {
	raw := lookupRaw(p, path)
	if raw == nil {
		return nil, nil
	}
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
		return string(raw[1 : len(raw)-1]), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// lookupRaw returns the bytes of the value at path in the valid JSON
// document p, or nil when the path is missing.
func lookupRaw(p []byte, path []string) []byte {
	start, end := value(p, 0)
	for _, k := range path {
		if start >= end {
			return nil
		}
		switch p[start] {
		case '{':
			start, end = member(p, start, k)
		case '[':
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 {
				return nil
			}
			start, end = element(p, start, i)
		default:
			return nil
		}
	}
	if start >= end {
		return nil
	}
	return p[start:end]
}

// value returns where the value at or after i (after whitespace) starts
// and ends.
func value(p []byte, i int) (start, end int) {
	i = space(p, i)
	return i, skip(p, i)
}

// member returns the bounds of the last member of the object at i named
// k, or (0, 0) when it has none.
func member(p []byte, i int, k string) (start, end int) {
	i = space(p, i+1) // after '{'
	if i < len(p) && p[i] == '}' {
		return 0, 0
	}
	for i < len(p) {
		ks := i
		ke := skip(p, ks)    // the key, quotes included
		i = space(p, ke) + 1 // after ':'
		vs, ve := value(p, i)
		if keyIs(p[ks:ke], k) {
			start, end = vs, ve // on, for a later duplicate
		}
		i = space(p, ve)
		if i >= len(p) || p[i] == '}' {
			break
		}
		i = space(p, i+1) // after ','
	}
	return start, end
}

// element returns the bounds of element n of the array at i, or (0, 0)
// when it has fewer.
func element(p []byte, i, n int) (start, end int) {
	i = space(p, i+1) // after '['
	if i < len(p) && p[i] == ']' {
		return 0, 0
	}
	for j := 0; i < len(p); j++ {
		vs, ve := value(p, i)
		if j == n {
			return vs, ve
		}
		i = space(p, ve)
		if i >= len(p) || p[i] == ']' {
			break
		}
		i = space(p, i+1) // after ','
	}
	return 0, 0
}

// keyIs reports whether the quoted key q is k once unescaped, as
// encoding/json unescapes it (invalid UTF-8 becomes U+FFFD, so anything
// but plain ASCII goes through it).
func keyIs(q []byte, k string) bool {
	if plainASCII(q[1 : len(q)-1]) {
		return string(q[1:len(q)-1]) == k
	}
	var s string
	return json.Unmarshal(q, &s) == nil && s == k
}

// plainASCII reports whether the inside of a JSON string is its value as
// it is: no escapes, nothing encoding/json would replace.
func plainASCII(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c >= 0x80 {
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

// str returns the index just after the string whose opening quote is at i.
func str(p []byte, i int) int {
	for i++; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}
