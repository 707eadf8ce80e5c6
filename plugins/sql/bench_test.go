package sql

import (
	"context"
	"fmt"
	"testing"

	"github.com/pipelined/pipelined/sdk"
)

// benchDeliver delivers b.N batches of 500 CallKaro events, each event new,
// and reports rows/s.
func benchDeliver(b *testing.B, cfg map[string]any) {
	const size = 500
	s := newTestSink(b, cfg, nil)
	tmpl := batchOf(0, size)
	batch := make([]sdk.Event, size)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range batch {
			batch[j] = tmpl[j]
			batch[j].ID = fmt.Sprintf("bench-%d-%d", i, j)
		}
		results, err := s.Deliver(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range results {
			if !r.IsDelivered() {
				b.Fatal(r)
			}
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkDeliverSQLite(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchDeliver(b, sqliteBackend.config(b)) })
	b.Run("columns", func(b *testing.B) {
		cfg := sqliteBackend.config(b)
		cfg["columns"] = map[string]any{"call_sid": "data.callSid", "duration": "data.call_duration"}
		cfg["column_types"] = map[string]any{"duration": "integer"}
		benchDeliver(b, cfg)
	})
}

func BenchmarkDeliverPostgres(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchDeliver(b, pgBackend.config(b)) })
	b.Run("columns", func(b *testing.B) {
		cfg := pgBackend.config(b)
		cfg["columns"] = map[string]any{"call_sid": "data.callSid", "duration": "data.call_duration"}
		cfg["column_types"] = map[string]any{"duration": "integer"}
		benchDeliver(b, cfg)
	})
}
