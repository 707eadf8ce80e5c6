package archive

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/plugins/internal/cputime"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

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
			b.ResetTimer()
			cpu := processCPU(b)
			for range b.N {
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
			cpu = processCPU(b) - cpu
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*size), "cpu-ns/event")
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
	b.ResetTimer()
	cpu := pluginCPU(b, pid)
	for range b.N {
		sinktest.DeliverAll(b, s, batch)
	}
	cpu = pluginCPU(b, pid) - cpu
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*size), "plugin-cpu-ns/event")
}

// pluginCPU is the user and system CPU time process pid has used.
func pluginCPU(b *testing.B, pid int) time.Duration {
	d, err := cputime.Process(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}
