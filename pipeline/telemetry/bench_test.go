package telemetry_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// BenchmarkEndSpan is what a span costs from start to end on the tracer
// that [telemetry.New] builds (the export queue's bookkeeping included),
// on every core at once, with a queue long enough that none is dropped:
// run it with -benchtime=200000x or fewer.
func BenchmarkEndSpan(b *testing.B) {
	b.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1048576")
	col := &stallingCollector{requests: make(chan struct{}, 1), release: make(chan struct{})}
	close(col.release)
	srv := httptest.NewServer(col)
	defer srv.Close()
	tr, err := telemetry.New(telemetry.Options{Endpoint: srv.URL, Protocol: "http/protobuf", SampleRatio: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	entries := []pipeline.Entry{{Event: pipeline.Event{ID: "ev"}}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			telemetry.EndAppend(tr.StartAppend(entries), nil)
		}
	})
	b.StopTimer()
	if n := tr.Dropped(); n != 0 {
		b.Fatalf("%d spans dropped: the measure includes drops; lower -benchtime", n)
	}
}
