package dispatch_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/sdk"
)

// TestObserveMetrics checks the wiring the daemon uses: Observe feeds a
// batch's outcomes, duration and size to the sink's metrics.
func TestObserveMetrics(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 5, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		if call == 1 {
			return []sdk.Result{sdk.Delivered(), sdk.Retry(time.Hour, errors.New("later")), sdk.Permanent(errors.New("no")), sdk.Delivered(),
				sdk.NotAttempted(time.Hour, errors.New("not sent"))}, nil
		}
		return nil, nil
	}}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	o := options(q, sink)
	o.BatchMax = 5
	o.Observe = func(r dispatch.Report) {
		m.Delivery(o.Sink, r.Delivered, r.Retried, r.NotAttempted, r.Dead, r.Duration, r.Err)
	}
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{Retrying: 2, Dead: 1})

	want := `
# HELP pipelined_deliveries_total Events handed to a sink, by sink and outcome: delivered, retried (scheduled again), not_attempted (not sent by the sink, queued again without an attempt counted) or dead (moved to the dead-letter queue).
# TYPE pipelined_deliveries_total counter
pipelined_deliveries_total{outcome="dead",sink="SINK"} 1
pipelined_deliveries_total{outcome="delivered",sink="SINK"} 2
pipelined_deliveries_total{outcome="not_attempted",sink="SINK"} 1
pipelined_deliveries_total{outcome="retried",sink="SINK"} 1
`
	want = strings.ReplaceAll(want, "SINK", o.Sink)
	waitFor(t, "the batch's metrics", func() bool {
		return testutil.GatherAndCompare(reg, strings.NewReader(want), "pipelined_deliveries_total") == nil
	})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pipelined_delivery_batch_size" {
			if h := mf.GetMetric()[0].GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() != 5 {
				t.Errorf("pipelined_delivery_batch_size = %d samples, sum %v; want 1 batch of 5", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
}
