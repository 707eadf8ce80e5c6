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
	body, err := os.ReadFile("../ingest/testdata/call_ended.json")
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
