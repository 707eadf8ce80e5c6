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

// BenchmarkSettle fetches 64 events and settles them as delivered, against
// an in-process single-node server (R1); appends are not timed. The
// delivery record adds one publish per delivered event.
func BenchmarkSettle(b *testing.B) {
	url := runServer(b)
	l := open(b, url, "BENCHS")
	defer l.Close()
	body := []byte(`"` + string(make([]byte, 0)) + `x"`)
	const batch = 64
	q := l.Queue("archive")
	ctx := context.Background()
	n := 0
	for b.Loop() {
		b.StopTimer()
		es := make([]pipeline.Entry, batch)
		for j := range es {
			n++
			es[j] = pipeline.Entry{
				Event:   pipeline.Event{ID: fmt.Sprintf("ev-%d", n), Source: "callkaro", ReceivedAt: time.Now(), Body: body, Auth: "none"},
				Targets: []pipeline.Target{{Sink: "archive", Route: "all"}},
			}
		}
		if _, err := l.Append(ctx, es); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		got := 0
		for got < batch {
			ds, err := q.Fetch(ctx, batch-got)
			if err != nil {
				b.Fatal(err)
			}
			ss := make([]pipeline.Settlement, len(ds))
			for i, d := range ds {
				ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
			}
			if err := q.Settle(ctx, ss); err != nil {
				b.Fatal(err)
			}
			got += len(ds)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
