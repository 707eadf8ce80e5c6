package sql

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// lookup follows path into a fully decoded doc: object keys, or indexes
// into arrays; nil when the path is missing. It is what the sink did
// before valueAt, kept as valueAt's oracle.
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
