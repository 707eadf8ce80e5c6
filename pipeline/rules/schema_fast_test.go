package rules_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// fastSchemas compiles the schemas of testdata/schemas, by name (the file
// name without .schema.json), and checks that each has a fast path.
func fastSchemas(t testing.TB) map[string]*rules.Schema {
	t.Helper()
	files, err := filepath.Glob("testdata/schemas/*.schema.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no schemas in testdata/schemas: %v", err)
	}
	out := map[string]*rules.Schema{}
	for _, f := range files {
		s := compileSchema(t, readTestdata(t, f))
		if s.FastVerdict(map[string]any{}) == "none" {
			t.Fatalf("%s has no fast path", f)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".schema.json")] = s
	}
	return out
}

// compileSchema compiles schema, failing t if it cannot.
func compileSchema(t testing.TB, schema []byte) *rules.Schema {
	t.Helper()
	s, err := rules.CompileSchema("test.schema.json", schema)
	if err != nil {
		t.Fatalf("CompileSchema(%s) = %v", schema, err)
	}
	return s
}

// readTestdata reads a file, failing t if it cannot.
func readTestdata(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decode decodes body as the daemon does before validating it.
func decode(t testing.TB, body string) any {
	t.Helper()
	doc, err := ingest.Decode([]byte(body))
	if err != nil {
		t.Fatalf("Decode(%s) = %v", body, err)
	}
	return doc
}

// checkFastPath fails t unless the fast path's verdict on doc is want and
// the library agrees with it, and unless Validate's answer is the
// library's.
func checkFastPath(t *testing.T, s *rules.Schema, doc any, want string) {
	t.Helper()
	got := s.FastVerdict(doc)
	lib := s.LibraryValid(doc)
	if got != want {
		t.Errorf("fast path = %s, want %s (library: valid = %v)", got, want, lib)
	}
	if got == "valid" && !lib || got == "invalid" && lib {
		t.Errorf("fast path = %s, but the library says valid = %v", got, lib)
	}
	if v, lv := s.Validate(doc), s.WithoutFastPath().Validate(doc); !slices.Equal(v, lv) {
		t.Errorf("Validate = %q, the library alone %q", v, lv)
	}
}

// keywordCases are documents for testdata/schemas/keywords.schema.json,
// each {"id": 1, <member>}, with the fast path's verdict.
var keywordCases = []struct{ member, want string }{
	{`"id": 1.0`, "valid"}, // "integer" takes a whole float
	{`"id": 1.5`, "invalid"},
	{`"id": 0`, "invalid"},
	{`"n": null`, "valid"},
	{`"n": -1.5`, "valid"},
	{`"n": -1.6`, "invalid"},
	{`"n": 100`, "valid"},
	{`"n": 100.25`, "invalid"},
	{`"n": "1"`, "invalid"},
	{`"m": 9`, "valid"},
	{`"m": -0`, "valid"},
	{`"m": 10`, "invalid"},
	{`"m": 4.5`, "invalid"},
	{`"m": "x"`, "valid"},              // multipleOf checks numbers only
	{`"m": 9007199254740993`, "maybe"}, // from 2⁵³ on, left to the library
	{`"m": 1e400`, "valid"},            // out of float64's range: its text, a string
	{`"h": 1.5`, "maybe"},              // multipleOf 0.5: not an integer
	{`"s": "ab"`, "valid"},
	{`"s": "àü"`, "valid"},    // two code points, four bytes
	{`"s": "àüàüà"`, "valid"}, // five code points, ten bytes
	{`"s": "a"`, "invalid"},
	{`"s": "abcdef"`, "invalid"},
	{`"s": "AB"`, "invalid"},
	{`"s": "a\ud800"`, "invalid"}, // a lone surrogate decodes to U+FFFD: not in the pattern
	{`"c": {"k": [1.0, "x", null, true]}`, "valid"},
	{`"c": {"k": [1, "x", null, false]}`, "invalid"},
	{`"c": {"k": [1, "x", null, true], "z": 1}`, "invalid"},
	{`"c": {"j": [1, "x", null, true]}`, "invalid"},
	{`"e": 1.0`, "valid"},
	{`"e": "one"`, "valid"},
	{`"e": null`, "valid"},
	{`"e": false`, "valid"},
	{`"e": [1, 2]`, "valid"},
	{`"e": {"a": 1.50}`, "valid"},
	{`"e": 2`, "invalid"},
	{`"e": "One"`, "invalid"},
	{`"e": true`, "invalid"},
	{`"e": [2, 1]`, "invalid"},
	{`"e": {"a": 1.5, "b": 1}`, "invalid"},
	{`"t": true`, "valid"},
	{`"t": 3`, "valid"},
	{`"t": 3.5`, "invalid"},
	{`"t": "3"`, "invalid"},
	{`"arr": ["a", 1, true, false]`, "valid"},
	{`"arr": ["a"]`, "valid"},
	{`"arr": []`, "invalid"},
	{`"arr": ["a", "b"]`, "invalid"},
	{`"arr": ["a", 1, 2]`, "invalid"},
	{`"arr": ["a", 1, true, true, true, true, true]`, "invalid"},
	{`"u": [1, "1", [1], {"a": 1}, null, true, false]`, "valid"},
	{`"u": [1, 1.0]`, "invalid"},
	{`"u": [{"a": [1]}, {"a": [1.0]}]`, "invalid"},
	{`"u": [0, -0]`, "invalid"},
	{`"u": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]`, "maybe"}, // the library hashes beyond 20
	{`"has": ["a", 1]`, "valid"},
	{`"has": [1, 2]`, "invalid"},
	{`"has": ["a", "b", "c"]`, "invalid"},
	{`"zero": [1, 0]`, "valid"},
	{`"zero": [1]`, "invalid"},
	{`"zero": []`, "invalid"},
	{`"zero": "x"`, "valid"},
	{`"obj": {"x": 1, "p_a": "s", "a_n": 2}`, "valid"},
	{`"obj": {"y": 1}`, "invalid"},
	{`"obj": {"p_n": 1}`, "invalid"},
	{`"obj": {"p_n": "s"}`, "invalid"},
	{`"obj": {"long_n": 1}`, "valid"},
	{`"obj": {"longer_n": 1}`, "invalid"},
	{`"map": {"a": 1, "b": 2.0}`, "valid"},
	{`"map": {"a": 1.5}`, "invalid"},
	{`"dep": {}`, "valid"},
	{`"dep": {"a": 1, "b": 2}`, "valid"},
	{`"dep": {"a": 1}`, "invalid"},
	{`"dep": {"c": 1}`, "invalid"},
	{`"dep": {"c": 1, "d": 1}`, "valid"},
	{`"tree": {"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": []}]}`, "valid"},
	{`"tree": {"v": 1, "kids": [{"v": 2, "kids": [{"w": 3}]}]}`, "invalid"},
	{`"r": 3`, "valid"},
	{`"r": 6`, "invalid"},
	{`"r": -1`, "invalid"},
	{`"all": "a"`, "valid"},
	{`"all": ""`, "invalid"},
	{`"one": 3`, "valid"},
	{`"one": "s"`, "invalid"}, // a string passes multipleOf too
	{`"one": 2`, "invalid"},
	{`"one": 4.0`, "invalid"},
	{`"one": 2.5`, "invalid"},
	{`"some": "ab"`, "valid"},
	{`"some": 0`, "valid"},
	{`"some": "abc"`, "invalid"},
	{`"some": -1`, "invalid"},
	{`"not": 1`, "valid"},
	{`"not": "a"`, "invalid"},
	{`"cond": 10`, "valid"},
	{`"cond": 9`, "invalid"},
	{`"cond": "a"`, "valid"},
	{`"cond": true`, "invalid"},
	{`"yes": {"anything": [1]}`, "valid"},
	{`"no": 1`, "invalid"},
	{`"x-a": "s"`, "valid"},
	{`"x-a": 1`, "invalid"},
	{`"other": 1`, "valid"},
}

// otherCases are documents for the other schemas of testdata/schemas.
var otherCases = []struct{ schema, doc, want string }{
	{"keywords", `{"id": 1}`, "valid"},
	{"keywords", `{}`, "invalid"},
	{"keywords", `[]`, "invalid"},
	{"keywords", `{"id": 1, "n": 2, "m": 3, "s": "abc", "t": 4, "dep": {"c": 1, "d": 2}, "tree": {"v": 0}, "cond": 11}`, "valid"},

	{"draft7", `{"tuple": ["a", 1]}`, "valid"},
	{"draft7", `{"tuple": ["a"]}`, "valid"},
	{"draft7", `{"tuple": ["a", 1, 2]}`, "invalid"},
	{"draft7", `{"tuple": [1]}`, "invalid"},
	{"draft7", `{"rest": ["a", 1, 2]}`, "valid"},
	{"draft7", `{"rest": ["a", "b"]}`, "invalid"},
	{"draft7", `{"list": ["a@example.com"]}`, "valid"},
	{"draft7", `{"list": ["nobody"]}`, "invalid"},
	{"draft7", `{"when": "2026-12-05T10:00:00Z"}`, "valid"},
	{"draft7", `{"when": "yesterday"}`, "invalid"},
	{"draft7", `{"ip": "10.0.0.1"}`, "valid"},
	{"draft7", `{"ip": "10.0.0.256"}`, "invalid"},
	{"draft7", `{"ip": 5}`, "valid"},
	{"draft7", `{"r": 1}`, "valid"}, // the $ref's sibling maximum is ignored
	{"draft7", `{"r": 0}`, "invalid"},
	{"draft7", `{"r": "x"}`, "invalid"},
	{"draft7", `{"dep": {"a": 1, "b": 1}}`, "valid"},
	{"draft7", `{"dep": {"a": 1}}`, "invalid"},
	{"draft7", `{"dep": {"c": 1}}`, "invalid"},
	{"draft7", `{"dep": {"c": 1, "d": 1}}`, "valid"},
	{"draft7", `{"k": 1.0}`, "valid"},
	{"draft7", `{"k": 2}`, "invalid"},
	{"draft7", `{"cond": {"a": 1, "b": 2}}`, "valid"},
	{"draft7", `{"cond": {"a": 1}}`, "invalid"},
	{"draft7", `{"cond": {}}`, "valid"},
	{"draft7", `{"names": {"ab": 1}}`, "valid"},
	{"draft7", `{"names": {"A": 1}}`, "invalid"},
	{"draft7", `{"has": ["a", 2]}`, "valid"},
	{"draft7", `{"has": ["a"]}`, "invalid"},
	{"draft7", `{"u": [1, 2]}`, "valid"},
	{"draft7", `{"u": ["a", "a"]}`, "invalid"},

	{"numbers", `{"a": 0.1}`, "valid"},
	{"numbers", `{"a": 0.09999999999999999}`, "invalid"},
	{"numbers", `{"b": 0.1}`, "valid"},
	{"numbers", `{"b": 0.10000000000000002}`, "invalid"},
	{"numbers", `{"c": 0}`, "invalid"},
	{"numbers", `{"c": -0}`, "invalid"},
	{"numbers", `{"c": 5e-324}`, "valid"},
	{"numbers", `{"d": -0.0}`, "invalid"},
	{"numbers", `{"d": -5e-324}`, "valid"},
	{"numbers", `{"e": 9007199254740993}`, "maybe"}, // an integer from 2⁵³ on decodes exactly, as an int64: left to the library
	{"numbers", `{"e": 9007199254740994}`, "maybe"},
	{"numbers", `{"f": 1.7976931348623157e308}`, "valid"},
	{"numbers", `{"f": 1e400}`, "valid"}, // a string: maximum does not apply
	{"numbers", `{"g": 0}`, "invalid"},
	{"numbers", `{"g": 5e-324}`, "valid"},
	{"numbers", `{"h": 0.1}`, "valid"},
	{"numbers", `{"h": 0.1000000000000000055511151231257827}`, "valid"}, // decodes to 0.1
	{"numbers", `{"h": 0.10000000000000002}`, "invalid"},
	{"numbers", `{"i": -0}`, "valid"},
	{"numbers", `{"i": 1e21}`, "valid"},
	{"numbers", `{"i": 1e23}`, "valid"},
	{"numbers", `{"i": 0.000025}`, "valid"},
	{"numbers", `{"i": 2.5e-6}`, "invalid"},
	{"numbers", `{"j": 1e300}`, "valid"},
	{"numbers", `{"j": 4503599627370495.5}`, "invalid"},
	{"numbers", `{"k": 14}`, "valid"},
	{"numbers", `{"k": -7}`, "valid"},
	{"numbers", `{"k": 15}`, "invalid"},
	{"numbers", `{"k": 1e20}`, "maybe"},
	{"numbers", `{"l": 3}`, "valid"},
	{"numbers", `{"l": 3.5}`, "invalid"},
	{"numbers", `{"m": 0.30000000000000004}`, "valid"},
	{"numbers", `{"m": 0.3}`, "invalid"},
	{"numbers", `{"n": 0.1}`, "invalid"}, // the const is no float64's shortest decimal
	{"numbers", `{"o": 0.3}`, "valid"},
	{"numbers", `{"o": 0.30000000000000004}`, "invalid"},
	{"numbers", `{"p": -9007199254740992}`, "valid"},
	{"numbers", `{"p": -9007199254740994}`, "maybe"},
	// Bignums decode to float64s: the library compares their shortest
	// decimals with the exact bounds.
	{"numbers", `{"q": 972783798187987123879878123}`, "valid"},
	{"numbers", `{"q": 972783798187987123879878124.0}`, "valid"},
	{"numbers", `{"q": 972783798187987223879878124}`, "invalid"},
	{"numbers", `{"r": 18446744073709551600.1}`, "invalid"}, // decodes to 2⁶⁴
	{"numbers", `{"r": 18446744073709549568}`, "valid"},
	{"numbers", `{"s": -972783798187987123879878124}`, "valid"},
	{"numbers", `{"s": -972783798187987223879878124}`, "invalid"},
	{"numbers", `{"t": 12345678910111213141516171819202122232425262728293031}`, "valid"}, // its decimal rounds up
	{"numbers", `{"t": 12345678910111210000000000000000000000000000000000000}`, "invalid"},
	{"numbers", `{"t": 12345678910111213141516171819202122232425262728293031.5e1}`, "valid"},

	{"callkaro", `{"event": "call_ended", "data": {"callSid": "x"}}`, "valid"},
	{"callkaro", `{"event": "call_ended", "data": {"callSid": ""}}`, "invalid"},
	{"callkaro", `{"event": "call_ended", "data": {}}`, "invalid"},
	{"callkaro", `{"event": "call_started", "data": {"callSid": "x"}}`, "invalid"},
}

// TestSchemaFastPath holds the fast path to the library on every keyword
// it decides, in both directions, and Validate to the library's messages.
func TestSchemaFastPath(t *testing.T) {
	schemas := fastSchemas(t)
	for _, c := range keywordCases {
		t.Run("keywords/"+c.member, func(t *testing.T) {
			checkFastPath(t, schemas["keywords"], decode(t, `{"id": 1, `+c.member+`}`), c.want)
		})
	}
	for _, c := range otherCases {
		t.Run(c.schema+"/"+c.doc, func(t *testing.T) {
			checkFastPath(t, schemas[c.schema], decode(t, c.doc), c.want)
		})
	}
}

// TestSchemaFastPathUnsupported: what the fast path does not decide goes
// to the library, for the whole schema or for the subschema.
func TestSchemaFastPathUnsupported(t *testing.T) {
	for _, c := range []struct{ name, schema, doc, want string }{
		{"unevaluatedProperties", `{"unevaluatedProperties": false}`, `{}`, "none"},
		{"in a subschema", `{"properties": {"a": {"unevaluatedProperties": false}}}`, `{"a": {}}`, "maybe"},
		{"beside it", `{"properties": {"a": {"unevaluatedProperties": false}}}`, `{"b": {}}`, "valid"},
		{"anyOf past it", `{"anyOf": [{"type": "string"}, {"unevaluatedItems": false}]}`, `"s"`, "valid"},
		{"$dynamicRef", `{"$dynamicAnchor": "n", "properties": {"a": {"$dynamicRef": "#n"}}}`, `{"a": 1}`, "maybe"},
		{"$ref cycle", `{"$defs": {"a": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/a"}]}}, "properties": {"x": {"$ref": "#/$defs/a"}}}`, `{}`, "none"},
		{"true", `true`, `[1, {"a": null}]`, "valid"},
		{"false", `false`, `{}`, "invalid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkFastPath(t, compileSchema(t, []byte(c.schema)), decode(t, c.doc), c.want)
		})
	}
}

// callKaroCases are the documented CallKaro payload, valid, and changes
// of its data: a nil value removes the field, json.RawMessage sets raw
// JSON.
var callKaroCases = []struct {
	name   string
	change map[string]any
	want   string
}{
	{"documented", nil, "valid"},
	{"optional fields null", map[string]any{"name": json.RawMessage(`null`), "call_duration": json.RawMessage(`null`), "functions_called": json.RawMessage(`null`), "post_call_detail": json.RawMessage(`null`)}, "valid"},
	{"optional fields absent", map[string]any{"name": nil, "agent": nil, "batchId": nil, "post_call": nil, "time": nil}, "valid"},
	{"Hindi transcript", map[string]any{"transcription": "नमस्ते, आपका कॉल रिकॉर्ड किया जा रहा है"}, "valid"},
	{"unknown field", map[string]any{"x_new": json.RawMessage(`{"a": [1, 2]}`)}, "valid"},
	{"duration as text", map[string]any{"call_duration": "12"}, "invalid"},
	{"duration out of range", map[string]any{"call_duration": json.RawMessage(`1e400`)}, "invalid"},
	{"callSid empty", map[string]any{"callSid": ""}, "invalid"},
	{"callSid missing", map[string]any{"callSid": nil}, "invalid"},
	{"callSid number", map[string]any{"callSid": 7}, "invalid"},
	{"function name number", map[string]any{"functions_called": json.RawMessage(`[{"name": 1}]`)}, "invalid"},
	{"function not object", map[string]any{"functions_called": json.RawMessage(`[null]`)}, "invalid"},
	{"comment number", map[string]any{"post_call_detail": json.RawMessage(`{"x": {"comment": 5}}`)}, "invalid"},
	{"detail not object", map[string]any{"post_call_detail": json.RawMessage(`{"x": 5}`)}, "invalid"},
	{"conversion as text", map[string]any{"conversion_status": "true"}, "invalid"},
}

// withData returns the documented CallKaro payload with data changed.
func withData(t testing.TB, change map[string]any) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(readTestdata(t, "testdata/call_ended.json"), &doc); err != nil {
		t.Fatal(err)
	}
	data := doc["data"].(map[string]any)
	for k, v := range change {
		if v == nil {
			delete(data, k)
		} else {
			data[k] = v
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSchemaFastPathCallKaro: on the CallKaro schema the fast path
// decides the payloads CallKaro sends, and a valid one costs Validate no
// allocation.
func TestSchemaFastPathCallKaro(t *testing.T) {
	s := compileSchema(t, readTestdata(t, "testdata/schemas/callkaro.schema.json"))
	for _, c := range callKaroCases {
		t.Run(c.name, func(t *testing.T) {
			checkFastPath(t, s, decode(t, string(withData(t, c.change))), c.want)
		})
	}
	doc := decode(t, string(readTestdata(t, "testdata/call_ended.json")))
	if v := s.Validate(doc); v != nil {
		t.Fatalf("Validate(documented payload) = %q", v)
	}
	if n := testing.AllocsPerRun(100, func() { s.Validate(doc) }); n != 0 {
		t.Errorf("Validate(documented payload) allocates %v times, want 0", n)
	}
}

// FuzzSchemaFastPath holds the fast path to the library on the schemas of
// testdata/schemas: on any body the daemon would decode, the fast path's
// "valid" is the library's valid and its "invalid" the library's invalid.
func FuzzSchemaFastPath(f *testing.F) {
	schemas := fastSchemas(f)
	for _, c := range callKaroCases {
		f.Add(withData(f, c.change))
	}
	for _, c := range keywordCases {
		f.Add([]byte(`{"id": 1, ` + c.member + `}`))
	}
	for _, c := range otherCases {
		f.Add([]byte(c.doc))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		doc, err := ingest.Decode(body)
		if err != nil {
			return
		}
		for name, s := range schemas {
			v, lib := s.FastVerdict(doc), s.LibraryValid(doc)
			if v == "valid" && !lib || v == "invalid" && lib {
				t.Fatalf("%s: fast path says %s, the library valid = %v, on %s", name, v, lib, body)
			}
		}
	})
}

// BenchmarkSchemaFastPath is Validate on the CallKaro payload, valid and
// with call_duration a string, with the fast path and with the library
// alone (Validate as it was before the fast path); "walk" is the fast
// path's own walk, what it adds to a document it cannot pass.
func BenchmarkSchemaFastPath(b *testing.B) {
	s := compileSchema(b, readTestdata(b, "testdata/schemas/callkaro.schema.json"))
	for _, c := range []struct {
		name string
		body []byte
		want bool
	}{
		{"valid", readTestdata(b, "testdata/call_ended.json"), true},
		{"invalid", withData(b, map[string]any{"call_duration": "12"}), false},
	} {
		doc := decode(b, string(c.body))
		for _, p := range []struct {
			name   string
			schema *rules.Schema
		}{{"fast", s}, {"library", s.WithoutFastPath()}} {
			b.Run(c.name+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if v := p.schema.Validate(doc); (v == nil) != c.want {
						b.Fatal(v)
					}
				}
			})
		}
		b.Run(c.name+"/walk", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.FastVerdict(doc)
			}
		})
	}
}
