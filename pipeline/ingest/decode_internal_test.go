package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// decodeSeeds are bodies on which decodeFast and encoding/json must agree:
// the CallKaro payload and the corners of JSON's grammar.
var decodeSeeds = []string{
	`{}`, `[]`, `null`, `true`, `false`, `0`, `-0`, `1.5e3`, `-1E-2`, `"x"`, `""`,
	` {"a" : [1, "b", null, true, {"c": {}}], "d": []} `,
	`{"a":1,"a":2}`,
	`{"n": 1e400}`, `{"n": -1e400, "m": 1}`, `1e-400`, `123456789012345678901234567890`,
	`9007199254740992`, `9007199254740993`, `-9007199254740993`, `1234567890123456789`, `-9223372036854775808`,
	`18446744073709551615`, `18446744073709551616`, `1000000000000000`, `10000000000000000`, `-000`, `12345678901234567.0`,
	`"\u00e9\n\t\"\\\/"`, `"\ud83d\ude00"`, `"\ud800"`, "\"\xff\xfe\"", "\"\xc3\x28\"", `"é ü 日本"`,
	`{"a":"\u0000"}`,
	// Not JSON: decodeFast must leave these to encoding/json.
	``, ` `, `{`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `01`, `1.`, `.5`, `-`, `1e`, `1e+`, `+1`,
	`tru`, `nul`, `"abc`, "\"a\x01\"", `"\x"`, `{}x`, `[] []`, `{"a":1}}`, `NaN`, `[1 2]`,
}

func fromFile(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/call_ended.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameDecode fails t unless Decode (decodeFast first) and decodeStd give the
// same value and agree on whether body is JSON, and unless the depth
// decodeFast reports of a body it takes is Depth's (ingest refuses by it).
func sameDecode(t *testing.T, body []byte) {
	t.Helper()
	if _, sh, ok := decodeFast(body); ok {
		if sh.depth != Depth(body) {
			t.Fatalf("decodeFast(%q) depth = %d, Depth says %d", body, sh.depth, Depth(body))
		}
		if dup, dupped := dupKey(t, body); sh.dupped != dupped || sh.dup != dup {
			t.Fatalf("decodeFast(%q) duplicate key = %q, %v; a walk of encoding/json's tokens finds %q, %v", body, sh.dup, sh.dupped, dup, dupped)
		}
	}
	want, wantErr := decodeStd(body)
	got, gotErr := Decode(body)
	if (wantErr == nil) != (gotErr == nil) || (wantErr != nil && wantErr.Error() != gotErr.Error()) {
		t.Fatalf("Decode(%q) error = %v, encoding/json says %v", body, gotErr, wantErr)
	}
	if !equalDoc(got, want) {
		t.Fatalf("Decode(%q) = %#v, encoding/json gives %#v", body, got, want)
	}
	// decodeOwned (ingest's, without the copy) gives decodeFast's answer.
	owned := bytes.Clone(body)
	fast, fastShape, fastOK := decodeFast(body)
	if doc, sh, ok := decodeOwned(owned); ok != fastOK || sh != fastShape || !equalDoc(doc, fast) {
		t.Fatalf("decodeOwned(%q) = %#v, %+v, %v; decodeFast gives %#v, %+v, %v", body, doc, sh, ok, fast, fastShape, fastOK)
	}
}

// dupKey finds the first key (in the order objects close, as decodeFast
// finds them) that one object of a valid body has twice, by walking
// encoding/json's tokens.
func dupKey(t *testing.T, body []byte) (string, bool) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // 1e400 too
	type object struct {
		keys  map[string]bool
		dup   string
		found bool
		key   bool // the next string token is a key
	}
	var stack []*object // nil entries for arrays
	var dup string
	var dupped bool
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return dup, dupped
		}
		if err != nil {
			t.Fatalf("Token of a body decodeFast took: %v", err)
		}
		var top *object
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if k, ok := tok.(string); ok && top != nil && top.key {
			if top.keys[k] && !top.found {
				top.dup, top.found = k, true
			}
			top.keys[k], top.key = true, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &object{keys: map[string]bool{}, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, nil)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if top != nil && top.found && !dupped {
				dup, dupped = top.dup, true
			}
		}
		// A value ended: the next token of an enclosing object is a key.
		if len(stack) > 0 && stack[len(stack)-1] != nil {
			stack[len(stack)-1].key = true
		}
	}
}

// equalDoc is reflect.DeepEqual, with NaN impossible in JSON and -0 told
// apart from 0.
func equalDoc(a, b any) bool {
	if fa, ok := a.(float64); ok {
		fb, ok := b.(float64)
		return ok && fa == fb && math.Signbit(fa) == math.Signbit(fb)
	}
	return reflect.DeepEqual(a, b)
}

func TestDecodeAgreesWithEncodingJSON(t *testing.T) {
	seeds := append([]string{string(fromFile(t))}, decodeSeeds...)
	for _, s := range seeds {
		t.Run(s, func(t *testing.T) { sameDecode(t, []byte(s)) })
	}
}

func TestDecodeFastTakesTheCallKaroPayload(t *testing.T) {
	if _, _, ok := decodeFast(fromFile(t)); !ok {
		t.Fatal("decodeFast left the CallKaro payload to encoding/json: the fast path is never taken")
	}
}

// FuzzDecode checks that Decode's fast path gives what encoding/json
// gives (value, numbers, strings, errors) on any input.
func FuzzDecode(f *testing.F) {
	f.Add(fromFile(f))
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if Depth(body) > MaxDepth {
			return
		}
		sameDecode(t, body)
	})
}

// BenchmarkDecode compares Decode with encoding/json alone on the
// CallKaro payload.
func BenchmarkDecode(b *testing.B) {
	body := fromFile(b)
	for _, bc := range []struct {
		name   string
		decode func([]byte) (any, error)
	}{{"Decode", Decode}, {"encoding-json", decodeStd}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.decode(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDecodeNumbers: a number is a float64, but an integer that no
// float64 holds and an int64 does is that int64, and a number out of
// float64's range is its text.
func TestDecodeNumbers(t *testing.T) {
	for _, tt := range []struct {
		body string
		want any
	}{
		{`9007199254740992`, float64(1 << 53)},
		{`-9007199254740992`, float64(-(1 << 53))},
		{`9007199254740993`, int64(1<<53 + 1)},
		{`-9007199254740993`, int64(-(1<<53 + 1))},
		{`1234567890123456789`, int64(1234567890123456789)},
		{`-9223372036854775808`, int64(math.MinInt64)},
		{`9223372036854775807`, int64(math.MaxInt64)},
		{`9223372036854775808`, float64(1 << 63)}, // beyond int64: a float64, as expr takes no uint64
		{`18446744073709551615`, float64(1 << 64)},
		{`123456789012345678901234567890`, 1.2345678901234568e29},
		{`1e999`, "1e999"},
		{`12345678901234567.0`, float64(12345678901234568)}, // a fraction: a float64
		{`1.5e3`, 1500.0},
	} {
		for name, decode := range map[string]func([]byte) (any, error){"Decode": Decode, "decodeStd": decodeStd} {
			got, err := decode([]byte(tt.body))
			if err != nil || got != tt.want {
				t.Errorf("%s(%s) = %#v, %v; want %#v", name, tt.body, got, err, tt.want)
			}
		}
	}
}

// TestDecodeCost holds what decoding takes under DecodeCost bytes per byte
// of body, on the shapes that cost the most per byte, at several sizes.
func TestDecodeCost(t *testing.T) {
	shape := map[string]func(n int) string{
		"numbers":         func(n int) string { return "[" + strings.Repeat("0,", n) + "0]" },
		"objects":         func(n int) string { return "[" + strings.Repeat("{},", n) + "{}]" },
		"objects of one":  func(n int) string { return "[" + strings.Repeat(`{"a":0},`, n) + `{"a":0}]` },
		"strings":         func(n int) string { return "[" + strings.Repeat(`"a",`, n) + `"a"]` },
		"arrays of one":   func(n int) string { return "[" + strings.Repeat("[0],", n) + "[0]]" },
		"out of range":    func(n int) string { return "[" + strings.Repeat("1e999,", n) + "1]" },
		"64-bit integers": func(n int) string { return "[" + strings.Repeat("1234567890123456789,", n) + "1]" },
		"keys": func(n int) string {
			var b strings.Builder
			b.WriteByte('{')
			for i := range n {
				fmt.Fprintf(&b, `"%x":0,`, i)
			}
			b.WriteString(`"":0}`)
			return b.String()
		},
	}
	for name, body := range shape {
		for _, n := range []int{1000, 100_000} {
			b := []byte(body(n))
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, _, ok := decodeOwned(b)
			runtime.ReadMemStats(&after)
			if !ok {
				t.Fatalf("%s of %d: not decoded", name, n)
			}
			if cost := float64(after.TotalAlloc-before.TotalAlloc) / float64(len(b)); cost > DecodeCost {
				t.Errorf("%s of %d: decoding took %.1f bytes per byte of body, more than DecodeCost %d", name, n, cost, DecodeCost)
			}
		}
	}
}
