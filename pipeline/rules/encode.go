package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// errTooBig is returned by appendJSON when the output passes its limit.
var errTooBig = errors.New("too big")

// marshalLimit is json.Marshal of v, stopped as soon as the output passes
// limit bytes: a transform whose result shares one big value many times
// (map(body.items, [#, body.order])) is small in memory and huge as JSON,
// and is refused before it is written out. The output is json.Marshal's
// to the byte.
func marshalLimit(v any, limit int) ([]byte, error) {
	// Encoded on the stack, then copied once at its size: appending to
	// nil would allocate at every doubling.
	var scratch [512]byte
	b, err := appendJSON(scratch[:0], v, limit)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// jsonSize is the length of v as JSON, or an error past limit.
func jsonSize(v any, limit int64) (int64, error) {
	b, err := appendJSON(nil, v, int(min(limit, math.MaxInt32)))
	return int64(len(b)), err
}

func appendJSON(b []byte, v any, limit int) ([]byte, error) {
	if len(b) > limit {
		return b, errTooBig
	}
	var err error
	switch x := v.(type) {
	case nil:
		b = append(b, "null"...)
	case bool:
		b = strconv.AppendBool(b, x)
	case string:
		b = appendString(b, x)
	case float64:
		b, err = appendFloat(b, x)
	case int:
		b = strconv.AppendInt(b, int64(x), 10)
	case int64:
		b = strconv.AppendInt(b, x, 10)
	case json.Number:
		b, err = appendMarshal(b, x)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendJSON(b, e, limit); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			if b, err = appendJSON(b, x[k], limit); err != nil {
				return b, err
			}
		}
		b = append(b, '}')
	default:
		// Other types (time.Time, []int from a range, map[string]string
		// of headers) hold no shared references: their size is bounded
		// by what built them.
		b, err = appendMarshal(b, x)
	}
	if err == nil && len(b) > limit {
		err = errTooBig
	}
	return b, err
}

func appendMarshal(b []byte, v any) ([]byte, error) {
	m, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	return append(b, m...), nil
}

// appendString appends s quoted as json.Marshal quotes it: plain ASCII
// directly, anything else through json.Marshal.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			m, _ := json.Marshal(s) // a string always encodes
			return append(b, m...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendFloat formats f as encoding/json does.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, fmt.Errorf("json: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}
