package archive

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/pipelined/pipelined/internal/cputime"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// BenchmarkDeliver delivers batches of CallKaro events, of the sizes the
// daemon sends at a few thousand events/s (batch_wait 20ms) and at its
// batch_max, to pipeline.toml's archive config, and reports the process's
// CPU time per event (cpu-ns/event: user + system, the figure the
// end-to-end runs read from /proc; ns/op also counts the wait for fsync).
// max_size is large enough that no file rotates: compressing rotated files
// is measured by BenchmarkCompress.
func BenchmarkDeliver(b *testing.B) {
	for _, size := range []int{1, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := newSink()
			s.log = slog.New(slog.DiscardHandler)
			cfg := map[string]any{"dir": b.TempDir(), "rotate": "1h", "max_size": "64GiB", "compress": "gzip"}
			if err := s.Configure(context.Background(), sinktest.Config(b, cfg)); err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			batch := make([]sdk.Event, size)
			for i := range batch {
				batch[i] = sinktest.NewEvent(i)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ReportAllocs()
			cputime.PerEvent(b, 0, size, "cpu-ns/event", func(int) {
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
		})
	}
}

// BenchmarkDeliverProcess runs the plugin binary as the daemon does and
// delivers batches of 100 CallKaro events to pipeline.toml's archive config
// over gRPC, and reports the plugin process's CPU time per event
// (plugin-cpu-ns/event: utime + stime from /proc/<pid>/stat, the figure
// bench/bench.sh reports per plugin), gRPC and protobuf included.
func BenchmarkDeliverProcess(b *testing.B) {
	const size = 100
	bin := sinktest.Build(b, "../../cmd/pipelined-sink-archive", "pipelined-sink-archive")
	client, s := sinktest.Start(b, bin, sinktest.StartOptions{})
	sinktest.Configure(b, s, map[string]any{"dir": b.TempDir(), "rotate": "1h", "max_size": "64GiB", "compress": "gzip"})
	pid := client.ReattachConfig().Pid
	batch := make([]sdk.Event, size)
	for i := range batch {
		batch[i] = sinktest.NewEvent(i)
	}
	cputime.PerEvent(b, pid, size, "plugin-cpu-ns/event", func(int) { sinktest.DeliverAll(b, s, batch) })
}

// BenchmarkCompress gzips a rotated file of 5,000 CallKaro records, as a
// file that max_size or rotate closed is compressed in the background,
// and reports the CPU per record and the compression ratio.
func BenchmarkCompress(b *testing.B) {
	const n = 5000
	var data []byte
	var keys []string
	for i := range n {
		ev := sinktest.NewEvent(i)
		var err error
		if data, keys, err = appendRecord(data, keys, &ev); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	p := filepath.Join(dir, "callkaro"+ext)
	var size int64
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cputime.PerEvent(b, 0, n, "cpu-ns/record", func(int) {
		if err := os.WriteFile(p, data, 0o640); err != nil {
			b.Fatal(err)
		}
		if err := compress(p); err != nil {
			b.Fatal(err)
		}
		fi, err := os.Stat(p + ".gz")
		if err != nil {
			b.Fatal(err)
		}
		size = fi.Size()
	})
	b.ReportMetric(float64(len(data))/float64(size), "ratio")
}
