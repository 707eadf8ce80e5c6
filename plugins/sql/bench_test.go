package sql

import (
	"context"
	"fmt"
	"testing"

	"github.com/pipelined/pipelined/internal/cputime"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// benchDeliver delivers b.N batches of size CallKaro events, each event
// new, and reports rows/s, and the process's CPU time per event
// (cpu-ns/event: user + system, the figure the end-to-end runs read from
// /proc; ns/op also counts the wait for fsync).
func benchDeliver(b *testing.B, cfg map[string]any, size int) {
	s := newTestSink(b, cfg, nil)
	tmpl := batchOf(0, size)
	batch := make([]sdk.Event, size)
	// A context that can end, as the host's calls have (the driver does
	// more per statement for one).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first delivery creates the table: not part of the figure.
	if _, err := s.Deliver(ctx, batchOf(size, 1)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cputime.PerEvent(b, 0, size, "cpu-ns/event", func(i int) {
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
	})
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "rows/s")
}

// referenceColumns are the columns of the db sink in pipeline.toml.
func referenceColumns(cfg map[string]any) map[string]any {
	cfg["columns"] = map[string]any{"call_sid": "data.callSid", "caller": "data.from", "callee": "data.to",
		"seconds": "data.call_duration", "lead_status": "data.post_call.lead_status"}
	cfg["column_types"] = map[string]any{"seconds": "real"}
	return cfg
}

func BenchmarkDeliverSQLite(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchDeliver(b, sqliteBackend.config(b), 500) })
	b.Run("columns", func(b *testing.B) {
		cfg := sqliteBackend.config(b)
		cfg["columns"] = map[string]any{"call_sid": "data.callSid", "duration": "data.call_duration"}
		cfg["column_types"] = map[string]any{"duration": "integer"}
		benchDeliver(b, cfg, 500)
	})
	// pipeline.toml's sink, in batches of the sizes the daemon sends at a
	// few thousand events/s (batch_wait 20ms) and at its batch_max.
	for _, size := range []int{1, 100, 500} {
		b.Run(fmt.Sprintf("reference/batch=%d", size), func(b *testing.B) {
			benchDeliver(b, referenceColumns(sqliteBackend.config(b)), size)
		})
	}
}

func BenchmarkDeliverPostgres(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchDeliver(b, pgBackend.config(b), 500) })
	b.Run("columns", func(b *testing.B) {
		cfg := pgBackend.config(b)
		cfg["columns"] = map[string]any{"call_sid": "data.callSid", "duration": "data.call_duration"}
		cfg["column_types"] = map[string]any{"duration": "integer"}
		benchDeliver(b, cfg, 500)
	})
}

// BenchmarkDeliverProcess runs the plugin binary as the daemon does and
// delivers batches of 100 CallKaro events to pipeline.toml's db sink over
// gRPC, and reports the plugin process's CPU time per event
// (plugin-cpu-ns/event: utime + stime from /proc/<pid>/stat, the figure
// bench/bench.sh reports per plugin), gRPC and protobuf included.
func BenchmarkDeliverProcess(b *testing.B) {
	const size = 100
	bin := sinktest.Build(b, "../../cmd/pipelined-sink-sql", "pipelined-sink-sql")
	client, s := sinktest.Start(b, bin, sinktest.StartOptions{})
	sinktest.Configure(b, s, referenceColumns(sqliteBackend.config(b)))
	sinktest.DeliverAll(b, s, batchOf(0, 1)) // creates the table
	pid := client.ReattachConfig().Pid
	tmpl := batchOf(0, size)
	batch := make([]sdk.Event, size)
	cputime.PerEvent(b, pid, size, "plugin-cpu-ns/event", func(i int) {
		for j := range batch {
			batch[j] = tmpl[j]
			batch[j].ID = fmt.Sprintf("bench-%d-%d", i, j)
		}
		sinktest.DeliverAll(b, s, batch)
	})
}
