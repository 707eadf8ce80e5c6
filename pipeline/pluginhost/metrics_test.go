package pluginhost

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/sdk"
)

// TestSupervisorCountsRestarts checks that the first start is not a
// restart and that starting again after the plugin died is one.
func TestSupervisorCountsRestarts(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := NewSupervisor(helperSpec(t, "sink", nil), &Options{BackoffMin: 50 * time.Millisecond, Metrics: metrics.New(reg)})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	restarts := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "pipelined_plugin_restarts_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok := []sdk.Event{event("a", `{}`)}
	if _, err := s.Deliver(ctx, ok); err != nil {
		t.Fatalf("first Deliver = %v", err)
	}
	if got := restarts(); got != 0 {
		t.Errorf("restarts after the first start = %v, want 0", got)
	}
	_, pid, _ := s.State()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The first Deliver may still see the dying process and fail.
	for {
		if _, err := s.Deliver(ctx, ok); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no Deliver succeeded after the kill")
		}
	}
	if got := restarts(); got != 1 {
		t.Errorf("restarts after a kill = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(reg, "pipelined_plugin_restarts_total"); n != 1 {
		t.Errorf("pipelined_plugin_restarts_total series = %d, want 1", n)
	}
}
