package jsoncompact

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// check fails when Append's answer for src differs from json.Compact's.
func check(t *testing.T, src []byte) {
	t.Helper()
	var want bytes.Buffer
	wantErr := json.Compact(&want, src)
	got, err := Append([]byte("prefix"), src)
	if (err != nil) != (wantErr != nil) || (err != nil && err.Error() != wantErr.Error()) {
		t.Fatalf("Append(%q) error = %v, json.Compact's %v", src, err, wantErr)
	}
	if err != nil {
		if string(got) != "prefix" {
			t.Fatalf("Append(%q) failed but changed dst to %q", src, got)
		}
		return
	}
	if string(got) != "prefix"+want.String() {
		t.Fatalf("Append(%q) = %q, json.Compact writes %q", src, got[len("prefix"):], want.String())
	}
}

func TestAppend(t *testing.T) {
	callKaro, err := os.ReadFile("../../../pipeline/ingest/testdata/call_ended.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{
		string(callKaro),
		`{}`, `[]`, ` { "a" : [ 1 , 2.5e-3 , -0 , true , false , null , "x" ] } `, `"a\"b\\c\u00e9\/\n"`,
		"\"line\u2028sep\"", "\"para\u2029\"", "\"\xff invalid UTF-8\"", `{"<>&": "<>&"}`,
		strings.Repeat("[", 600) + strings.Repeat("]", 600),
		// invalid: each must fail as json.Compact fails
		``, ` `, `{`, `{"a"}`, `{"a":1,}`, `[1,]`, `01`, `1.`, `1e`, `-`, `"\x"`, `"\u12g4"`, "\"a\tb\"",
		`tru`, `nul`, `{} {}`, `[1 2]`, `{"a" 1}`, `{1:2}`, `"unterminated`,
	} {
		check(t, []byte(src))
	}
}

func FuzzAppend(f *testing.F) {
	f.Add([]byte(` {"a": [1, -2.5E+3, "x\u2028", true, null]} `))
	f.Add([]byte(`[0.1e5, "\ud800", {}]`))
	f.Add([]byte(`{"a":}`))
	f.Fuzz(func(t *testing.T, src []byte) { check(t, src) })
}

func BenchmarkAppend(b *testing.B) {
	src, err := os.ReadFile("../../../pipeline/ingest/testdata/call_ended.json")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("jsoncompact", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		var dst []byte
		for b.Loop() {
			dst, _ = Append(dst[:0], src)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			json.Compact(&buf, src)
		}
	})
}
