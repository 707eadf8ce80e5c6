package ingest

import (
	"os"
	"testing"
)

// depthByteByByte is Depth as it was before it looked for a string's end
// with bytes.IndexByte: the oracle of FuzzDepthSame.
func depthByteByByte(body []byte) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case inString:
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// FuzzDepthSame holds Depth to the byte-by-byte scan on any input, JSON
// or not: a body refused as too deep must stay refused the same way.
func FuzzDepthSame(f *testing.F) {
	for _, s := range []string{`1`, `[]`, `{"a":[1,{"b":"]"}]}`, `"\\\""`, `[[["\\"]]]`, `["\"`, `"\\\\"[`, `["a\\\"[" , [ ]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Depth(b), depthByteByByte(b); got != want {
			t.Fatalf("Depth(%q) = %d, the byte-by-byte scan says %d", b, got, want)
		}
	})
}

func BenchmarkDepth(b *testing.B) {
	body, err := os.ReadFile("testdata/call_ended.json")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("IndexByte", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			Depth(body)
		}
	})
	b.Run("byte-by-byte", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			depthByteByByte(body)
		}
	})
}
