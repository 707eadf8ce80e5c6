package jetstreamlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// BenchmarkAppend appends batches of 64 keyed CallKaro-sized events routed
// to two sinks, as the writer does under load, against an in-process
// single-node server (R1).
func BenchmarkAppend(b *testing.B) {
	url := runServer(b)
	l := open(b, url, "BENCH")
	defer l.Close()
	body := make([]byte, 1300)
	for i := range body {
		body[i] = 'x'
	}
	body[0], body[len(body)-1] = '"', '"'
	const batch = 64
	n := 0
	b.ResetTimer()
	for b.Loop() {
		es := make([]pipeline.Entry, batch)
		for j := range es {
			n++
			id := fmt.Sprintf("ev-%d", n)
			es[j] = pipeline.Entry{
				Event:       pipeline.Event{ID: id, Source: "callkaro", ReceivedAt: time.Now(), Body: body, Auth: "none"},
				DedupKey:    id,
				DedupWindow: time.Hour,
				Targets:     []pipeline.Target{{Sink: "archive", Route: "all"}, {Sink: "db", Route: "all"}},
			}
		}
		if _, err := l.Append(context.Background(), es); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
}
