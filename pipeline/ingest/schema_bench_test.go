package ingest_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/pipelined/pipelined/pipeline/ingest"
)

// BenchmarkSchema measures what the CallKaro source adds to each event on
// the ingest path, reported as ns/event (target: under 20 µs). "schema"
// validates the decoded documented payload; "decide" is Config.Decide as
// serve calls it: reading and decoding the body, the accept rule and the
// schema (the source has no dedup key and the config no routes).
func BenchmarkSchema(b *testing.B) {
	src := callKaroSource(b)
	body := readFile(b, callKaroPayload)
	doc, err := ingest.Decode(body)
	if err != nil {
		b.Fatal(err)
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
	}
	b.Run("schema", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if v := src.Schema.Validate(doc); v != nil {
				b.Fatal(v)
			}
		}
		report(b)
	})
	b.Run("decide", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		cfg := ingest.Config{MaxBody: 1 << 20}
		header := http.Header{"Content-Type": {"application/json"}}
		for b.Loop() {
			d := cfg.Decide(&src, ingest.Request{Header: header, Body: bytes.NewReader(body), ContentLength: int64(len(body)), ID: "id"})
			if !d.Accepted() {
				b.Fatal(d.Error)
			}
		}
		report(b)
	})
}
