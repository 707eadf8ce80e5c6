package metrics

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSinkOrder checks the per-key order series: the held gauges are read
// at scrape time, for the sinks with an order key only; the error counter
// counts.
func TestSinkOrder(t *testing.T) {
	m, reg := newMetrics(t)
	m.SetQueueSource(func(context.Context) ([]QueueSample, error) {
		return []QueueSample{
			{Sink: "crm", Ordered: true, HeldKeys: 2, Held: 17},
			{Sink: "archive"},
			{Sink: "erp", Ordered: true, Rebuilding: true}, // known from the dispatcher while the queues are rebuilt
		}, nil
	})
	m.OrderKeyError("crm")
	m.OrderKeyError("crm")
	want := `
# HELP pipelined_sink_order_held_events Events of a sink with delivery.order_key held back behind an earlier event of their key, by sink.
# TYPE pipelined_sink_order_held_events gauge
pipelined_sink_order_held_events{sink="crm"} 17
pipelined_sink_order_held_events{sink="erp"} 0
# HELP pipelined_sink_order_held_keys Keys of a sink with delivery.order_key that hold events back behind one of theirs in flight, retrying or (order_on_dead = "block") dead, by sink.
# TYPE pipelined_sink_order_held_keys gauge
pipelined_sink_order_held_keys{sink="crm"} 2
pipelined_sink_order_held_keys{sink="erp"} 0
# HELP pipelined_sink_order_key_errors_total Events whose delivery.order_key failed or gave no key: each is delivered in a key of its own, by sink.
# TYPE pipelined_sink_order_key_errors_total counter
pipelined_sink_order_key_errors_total{sink="crm"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pipelined_sink_order_held_keys", "pipelined_sink_order_held_events", "pipelined_sink_order_key_errors_total"); err != nil {
		t.Error(err)
	}
	var nilM *Metrics
	nilM.OrderKeyError("crm") // a nil Metrics records nothing
}
