package ingest_test

import (
	"testing"

	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// BenchmarkSchema measures what the CallKaro source adds to each event on
// the ingest path, reported as ns/event (target: under 20 µs). "schema"
// validates the decoded documented payload; "accept+schema" is
// ingest.Validate as serve calls it; "decode+accept+schema" adds the JSON
// decoding that routing needs anyway.
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
	b.Run("accept+schema", func(b *testing.B) {
		b.ReportAllocs()
		env := &rules.Env{Body: doc, Source: src.Name}
		for b.Loop() {
			if code, reason, _ := ingest.Validate(&src, env); code != 0 {
				b.Fatal(reason)
			}
		}
		report(b)
	})
	b.Run("decode+accept+schema", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			doc, err := ingest.Decode(body)
			if err != nil {
				b.Fatal(err)
			}
			if code, reason, _ := ingest.Validate(&src, &rules.Env{Body: doc, Source: src.Name}); code != 0 {
				b.Fatal(reason)
			}
		}
		report(b)
	})
}
