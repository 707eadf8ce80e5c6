package writer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// TestMetrics checks that every append is observed once with its size and
// duration, and that a failed one counts as a failure.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := &slowLog{Log: memlog.New(), delay: 2 * time.Millisecond}
	w := writer.New(l, &writer.Options{Metrics: metrics.New(reg)})
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := w.Append(context.Background(), entry(fmt.Sprint("ev", i), "")); err != nil {
				t.Errorf("Append() = %v", err)
			}
		}()
	}
	wg.Wait()
	l.err = errors.New("disk on fire")
	if _, err := w.Append(context.Background(), entry("late", "")); err == nil {
		t.Error("Append() to a failing log = nil, want an error")
	}
	w.Close()

	h := gather(t, reg)
	batches := l.calls.Load() - 1 // the last one failed
	if got := h["pipelined_writer_batch_size"].count; int64(got) != batches {
		t.Errorf("pipelined_writer_batch_size count = %d, want %d (one per append)", got, batches)
	}
	if got := h["pipelined_writer_batch_size"].sum; got != n {
		t.Errorf("pipelined_writer_batch_size sum = %v, want %d entries", got, n)
	}
	if got := h["pipelined_writer_commit_duration_seconds"]; int64(got.count) != batches || got.sum < float64(batches)*0.002 {
		t.Errorf("pipelined_writer_commit_duration_seconds = %+v, want %d samples of at least 2ms", got, batches)
	}
	if got := h["pipelined_writer_commit_failures_total"].sum; got != 1 {
		t.Errorf("pipelined_writer_commit_failures_total = %v, want 1", got)
	}
}

type sample struct {
	count uint64
	sum   float64
}

// gather returns, per metric name, a histogram's count and sum or a
// counter's value (as sum).
func gather(t testing.TB, reg *prometheus.Registry) map[string]sample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	out := map[string]sample{}
	for _, mf := range mfs {
		var s sample
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				s.count += h.GetSampleCount()
				s.sum += h.GetSampleSum()
			}
			if c := m.GetCounter(); c != nil {
				s.sum += c.GetValue()
			}
		}
		out[mf.GetName()] = s
	}
	return out
}
