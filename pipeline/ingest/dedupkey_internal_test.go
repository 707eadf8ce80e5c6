package ingest

import (
	"net/http"
	"testing"
	"unicode/utf8"

	"github.com/pipelined/pipelined/pipeline/rules"
)

// FuzzDedupKeyOfHeaders: the dedup key read from a header (dedup_header,
// or a dedup_key expression over headers) is UTF-8, as the log keeps it,
// and two header values that differ give two keys. Making the key with
// validUTF8 (U+FFFD for each run of bytes that is not UTF-8) broke the
// second: "ord-\xfc" and "ord-\xe4" were one key, and the second event was
// answered duplicate and dropped (the input kept in testdata/fuzz).
func FuzzDedupKeyOfHeaders(f *testing.F) {
	f.Add("order-M\xfcller", "order-M\xe4ller")
	f.Add("a\xff", "a\xff\xff")
	f.Add("(bytes)ff", "\xff")
	f.Add("x\uFFFD", "x\xff")
	expr, err := rules.CompileValue(`headers["x-id"]`)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		keys := map[string]string{}
		for _, v := range []string{a, b} {
			h := http.Header{"X-Id": {v}, "Webhook-Id": {v}}
			byHeader := textKey(rules.StringKey(h.Get("Webhook-Id")))
			hs, text := headers(h, nil, nil)
			env := &rules.Env{Headers: hs}
			if !text {
				env.Headers = rawHeaders(h, nil, nil)
			}
			k, err := expr.String(env)
			if err != nil {
				t.Fatal(err)
			}
			byExpr := textKey(k)
			if byExpr != byHeader {
				t.Fatalf("header %q: key %q from the expression, %q from dedup_header", v, byExpr, byHeader)
			}
			if !utf8.ValidString(byHeader) {
				t.Fatalf("header %q: key %q is not UTF-8", v, byHeader)
			}
			keys[v] = byHeader
		}
		if a != b && keys[a] == keys[b] {
			t.Fatalf("headers %q and %q: one key %q", a, b, keys[a])
		}
	})
}
