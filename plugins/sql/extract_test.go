package sql

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/sdk/sinktest"
)

// lookup follows path into a fully decoded doc: object keys, or indexes
// into arrays; nil when the path is missing. It is what the sink did
// before valueAt, kept as the oracle of valueAt and the extractor.
func lookup(doc any, path []string) any {
	for _, k := range path {
		switch v := doc.(type) {
		case map[string]any:
			doc = v[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(v) {
				return nil
			}
			doc = v[i]
		default:
			return nil
		}
	}
	return doc
}

// decodeAll decodes p as the sink did before valueAt.
func decodeAll(t testing.TB, p []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decode %q: %v", p, err)
	}
	return doc
}

// valueAt returns the value at path in the valid JSON document p, decoded
// by decodeValue, or nil when the path is missing or leads to null.
func valueAt(p []byte, path []string) (any, error) {
	out := make([]span, 1)
	newExtractor([][]string{path}).find(p, out)
	if out[0].start >= out[0].end {
		return nil, nil
	}
	return decodeValue(string(p[out[0].start:out[0].end]))
}

// checkValueAt fails when valueAt's answer for path differs from decoding
// all of p and following the path.
func checkValueAt(t testing.TB, p []byte, path []string) {
	t.Helper()
	want := lookup(decodeAll(t, p), path)
	got, err := valueAt(p, path)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("valueAt(%q, %q) = %#v, %v; decoding it all gives %#v", p, path, got, err, want)
	}
}

func TestValueAt(t *testing.T) {
	doc := `{"data": {"callSid": "CA1", "call_duration": 42.50, "from": "+91", "post_call": {"lead_status": "interested"},
	  "tags": ["a", {"b": [1, 2, {"c": null}]}], "esc\"aped": "q", "\u0061scii": "u", "dup": 1, "dup": "last",
	  "nested": {"s": "a } ] \" , string", "e": {}, "a": []}, "caf\u00e9": "é", "n": -1.5e3}, "top": true}`
	compact := new(bytes.Buffer)
	if err := json.Compact(compact, []byte(doc)); err != nil {
		t.Fatal(err)
	}
	paths := []string{
		"data.callSid", "data.call_duration", "data.post_call.lead_status", "data.post_call", "data.tags",
		"data.tags.0", "data.tags.1.b.2", "data.tags.1.b.2.c", "data.tags.1.b.3", "data.tags.+1.b.01",
		"data.tags.-1", "data.tags.x", `data.esc"aped`, "data.ascii", "data.dup", "data.nested.s",
		"data.nested.e", "data.nested.a", "data.nested.a.0", "data.café", "data.n", "top", "top.x",
		"missing", "data.missing.deeper", "data.callSid.x", "",
	}
	for _, p := range []struct {
		name string
		text []byte
	}{{"as sent", []byte(doc)}, {"compacted", compact.Bytes()}} {
		t.Run(p.name, func(t *testing.T) {
			for _, path := range paths {
				checkValueAt(t, p.text, strings.Split(path, "."))
			}
			for _, top := range []string{`[1, {"a": 2}]`, `"s"`, `12`, `null`, ` {} `, `[]`} {
				for _, path := range []string{"0", "1.a", "a", ""} {
					checkValueAt(t, []byte(top), strings.Split(path, "."))
				}
			}
		})
	}
}

// FuzzValueAt holds valueAt to decoding the whole document and following
// the path, on any valid JSON and any path.
func FuzzValueAt(f *testing.F) {
	f.Add([]byte(`{"data": {"callSid": "CA1", "x": [1, {"y": null}]}}`), "data.callSid")
	f.Add([]byte(`{"a": 1, "a": {"b": "\u00e9\"}"}}`), "a.b")
	f.Add([]byte(`[[1], [2, [3]]]`), "1.1.0")
	f.Add([]byte(`{"k\ud800": 1}`), "k\ufffd")
	f.Add([]byte("{\"k\xff\": 1}"), "k\ufffd")
	f.Fuzz(func(t *testing.T, p []byte, path string) {
		if !json.Valid(p) {
			return
		}
		checkValueAt(t, p, strings.Split(path, "."))
	})
}

// checkExtractor fails when the extractor of paths, run once over p, finds
// for any path other than decoding all of p and following that path.
func checkExtractor(t testing.TB, p []byte, paths [][]string) {
	t.Helper()
	doc := decodeAll(t, p)
	out := make([]span, len(paths))
	x := newExtractor(paths)
	// As the sink does, one extractor and one out for every event: what the
	// last document left in the scratch must not show in the next answer.
	x.find(fullDoc(t, paths), out)
	x.find(p, out)
	for j, path := range paths {
		var got any
		if sp := out[j]; sp.start < sp.end {
			var err error
			if got, err = decodeValue(string(p[sp.start:sp.end])); err != nil {
				t.Errorf("decodeValue(%q) = %v", p[sp.start:sp.end], err)
			}
		}
		if want := lookup(doc, path); !reflect.DeepEqual(got, want) {
			t.Errorf("extractor(%q), path %q = %#v; decoding it all gives %#v", p, path, got, want)
		}
	}
}

// fullDoc returns a document holding a value at every one of paths (as
// objects: a path through an array of another document, as an object's
// member here): the most scratch an extractor of paths can be left with.
func fullDoc(t testing.TB, paths [][]string) []byte {
	t.Helper()
	root := map[string]any{}
	for _, path := range paths {
		m := root
		for i, k := range path {
			if i == len(path)-1 {
				if _, ok := m[k]; !ok {
					m[k] = 1
				}
				break
			}
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
	}
	b, err := json.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtractor(t *testing.T) {
	doc := []byte(`{"data": {"callSid": "CA1", "from": "+91", "dup": {"a": 1}, "post_call": {"lead_status": "x"},
	  "tags": ["a", {"b": 2}], "dup": {"b": 2}, "n": 5}, "top": [0, 1], "data": {"late": true, "dup": 3}}`)
	// The second "data" wins whole: data.callSid is missing, data.dup is 3.
	checkExtractor(t, doc, [][]string{
		{"data", "callSid"}, {"data", "dup"}, {"data", "dup", "a"}, {"data", "late"}, {"data"},
		{"top", "1"}, {"top", "0"}, {"top", "x"}, {"top", "01"}, {"data", "late"}, {"missing"},
	})
	first := []byte(`{"data": {"callSid": "CA1", "dup": {"a": 1}, "tags": ["a", {"b": 2}], "dup": {"b": 2},
	  "post_call": {"lead_status": "x"}, "caf\u00e9": 1, "k\"q": 2}}`)
	checkExtractor(t, first, [][]string{
		{"data", "callSid"}, {"data", "dup", "a"}, {"data", "dup", "b"}, {"data", "tags", "1", "b"},
		{"data", "tags", "0"}, {"data", "tags", "2"}, {"data", "post_call", "lead_status"}, {"data", "café"},
		{"data", `k"q`}, {"data", "callSid", "x"},
	})
}

// FuzzExtractor holds the extractor, finding several paths in one pass, to
// decoding the whole document and following each path, on any valid JSON
// and any paths (separated by "|" in the fuzzer's string).
func FuzzExtractor(f *testing.F) {
	f.Add([]byte(`{"data": {"callSid": "CA1", "x": [1, {"y": null}]}}`), "data.callSid|data.x.1.y|data.x|data")
	f.Add([]byte(`{"a": {"b": 1}, "a": {"c": "\u00e9\"}"}}`), "a.b|a.c|a")
	f.Add([]byte(`[[1], [2, [3]]]`), "1.1.0|0|1.0|0.0")
	f.Add([]byte(`{"k\ud800": {"a": 1}, "k": 2}`), "k\ufffd.a|k|k\ufffd")
	f.Fuzz(func(t *testing.T, p []byte, paths string) {
		if !json.Valid(p) {
			return
		}
		var ps [][]string
		for _, path := range strings.Split(paths, "|") {
			ps = append(ps, strings.Split(path, "."))
		}
		checkExtractor(t, p, ps)
	})
}

// BenchmarkExtractor finds pipeline.toml's five columns in the compacted
// CallKaro payload, as the SQLite sink does for every event.
func BenchmarkExtractor(b *testing.B) {
	var p bytes.Buffer
	if err := json.Compact(&p, sinktest.NewEvent(0).Body); err != nil {
		b.Fatal(err)
	}
	var paths [][]string
	for _, c := range []string{"data.callSid", "data.from", "data.to", "data.call_duration", "data.post_call.lead_status"} {
		paths = append(paths, strings.Split(c, "."))
	}
	x := newExtractor(paths)
	out := make([]span, len(paths))
	b.SetBytes(int64(p.Len()))
	for b.Loop() {
		x.find(p.Bytes(), out)
	}
}
