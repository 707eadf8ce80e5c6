package sql

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// startPlugin runs bin as a go-plugin process, as the host does, and
// returns its client and the sink.
func startPlugin(t *testing.T, bin string, logs *testlog.Buffer) (*plugin.Client, sdk.Sink) {
	t.Helper()
	return sinktest.Start(t, bin, sinktest.StartOptions{Logs: logs})
}

// TestPluginProcess runs the real binary and kills it with SIGKILL in the
// middle of a big batch; a new process given the same batch again stores
// every row exactly once.
func TestPluginProcess(t *testing.T) {
	bin := sinktest.Build(t, "../../cmd/pipelined-sink-sql", "pipelined-sink-sql")

	t.Run("by-hand", func(t *testing.T) { sinktest.RunByHand(t, bin) })

	for _, be := range backends {
		t.Run("kill-mid-batch/"+be.name, func(t *testing.T) {
			cfg := be.config(t)
			var logs testlog.Buffer
			ctx := context.Background()
			client, s := startPlugin(t, bin, &logs)
			if err := s.Configure(ctx, []byte(`{"driver": "mysql"}`)); err == nil || !strings.Contains(err.Error(), `"driver" = "mysql"`) {
				t.Errorf("Configure with a bad driver over the wire = %v, want the key named", err)
			}
			if err := s.Configure(ctx, sinktest.Config(t, cfg)); err != nil {
				t.Fatalf("Configure = %v", err)
			}
			sinktest.DeliverAll(t, s, batchOf(0, 10))

			// Batches of 1000 (1.3 MB, under gRPC's 4 MiB message limit) one
			// after the other, as the host sends them, until SIGKILL lands in
			// the middle of one.
			const size, batches = 1000, 40
			pid := client.ReattachConfig().Pid
			acked := make(chan int, batches)
			go func() {
				defer close(acked)
				for i := range batches {
					results, err := s.Deliver(ctx, batchOf(10+i*size, size))
					if err != nil {
						return
					}
					for _, r := range results {
						if !r.IsDelivered() {
							return
						}
					}
					acked <- i
				}
			}()
			time.Sleep(700 * time.Millisecond)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill plugin: %v", err)
			}
			nacked := 0
			for range acked {
				nacked++
			}
			client.Kill()
			t.Logf("%d of %d batches acknowledged before SIGKILL", nacked, batches)
			if nacked == batches {
				t.Logf("every batch finished before the kill: the machine is fast, the crash hit no batch")
			}

			db := be.db(t, cfg)
			// Acknowledged means durable: every acknowledged row is there,
			// and the batch in flight is all or nothing.
			before := countRows(t, db, cfg)
			if want := 10 + nacked*size; before != want && before != want+size {
				t.Errorf("rows after the kill = %d, want %d (acknowledged) or %d (and the batch in flight, committed whole)", before, want, want+size)
			}
			_, s2 := startPlugin(t, bin, &logs)
			if err := s2.Configure(ctx, sinktest.Config(t, cfg)); err != nil {
				t.Fatalf("Configure = %v", err)
			}
			// The host redelivers everything not acknowledged; redeliver all.
			for i := range batches {
				sinktest.DeliverAll(t, s2, batchOf(10+i*size, size))
			}
			sinktest.DeliverAll(t, s2, batchOf(0, 10))
			if err := s2.(sdk.Closer).Close(ctx); err != nil {
				t.Errorf("Close = %v", err)
			}
			if got, want := countRows(t, db, cfg), 10+batches*size; got != want {
				t.Errorf("rows after redelivery = %d, want %d (every event once)", got, want)
			}
			if be.name == "sqlite" {
				var ok string
				if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
					t.Errorf("integrity_check = %q, %v, want ok", ok, err)
				}
			}
		})
	}
}
