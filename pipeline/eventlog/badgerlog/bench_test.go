package badgerlog_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// BenchmarkAppend measures one durable append (one Badger commit with
// SyncWrites: the fsync) of batches of 1, 16 and 256 CallKaro-sized events,
// each with a dedup key and one queue entry. ns/op is per batch; the
// events/s metric is what one writer goroutine sustains.
func BenchmarkAppend(b *testing.B) {
	body, err := os.ReadFile("../../ingest/testdata/call_ended.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			db, err := badgerlog.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			seq := 0
			entries := make([]pipeline.Entry, n)
			b.SetBytes(int64(n * len(body)))
			start := time.Now()
			for b.Loop() {
				for i := range entries {
					seq++
					id := fmt.Sprintf("ev-%09d", seq)
					entries[i] = pipeline.Entry{
						Event:       pipeline.Event{ID: id, Source: "callkaro", ReceivedAt: time.Now(), Body: body},
						DedupKey:    id,
						DedupWindow: time.Hour,
						Targets:     []pipeline.Target{{Sink: "archive", Route: "all-calls"}},
					}
				}
				if _, err := db.Append(ctx, entries); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(seq)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkSettle measures the delivery side of the log: Fetch a batch of
// 1 or 128 CallKaro-sized events and Settle it as delivered (one write-ahead
// log record and fsync per Settle). ns/op is per batch; events/s is what one
// dispatcher sustains against the log alone. The delivery record of each
// event rides in the same record.
func BenchmarkSettle(b *testing.B) {
	body, err := os.ReadFile("../../ingest/testdata/call_ended.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			db, err := badgerlog.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			q := db.Queue("archive")
			seq := 0
			entries := make([]pipeline.Entry, n)
			settled := 0
			var spent time.Duration
			for b.Loop() {
				b.StopTimer()
				for i := range entries {
					seq++
					entries[i] = pipeline.Entry{
						Event:   pipeline.Event{ID: fmt.Sprintf("ev-%09d", seq), Source: "callkaro", ReceivedAt: time.Now(), Body: body},
						Targets: []pipeline.Target{{Sink: "archive", Route: "all-calls"}},
					}
				}
				if _, err := db.Append(ctx, entries); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				ds, err := q.Fetch(ctx, n)
				if err != nil || len(ds) != n {
					b.Fatalf("Fetch(%d) = %d, %v", n, len(ds), err)
				}
				ss := make([]pipeline.Settlement, len(ds))
				for i, d := range ds {
					ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
				}
				if err := q.Settle(ctx, ss); err != nil {
					b.Fatal(err)
				}
				spent += time.Since(start)
				settled += n
			}
			b.ReportMetric(float64(settled)/spent.Seconds(), "events/s")
		})
	}
}
