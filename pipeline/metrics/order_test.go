package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSinkOrder checks the per-key order series: the held gauges follow
// SinkOrder, the error counter counts.
func TestSinkOrder(t *testing.T) {
	m, _ := newMetrics(t)
	m.SinkOrder("crm", 2, 17)
	m.OrderKeyError("crm")
	m.OrderKeyError("crm")
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"pipelined_sink_order_held_keys", testutil.ToFloat64(m.order.heldKeys.WithLabelValues("crm")), 2},
		{"pipelined_sink_order_held_events", testutil.ToFloat64(m.order.held.WithLabelValues("crm")), 17},
		{"pipelined_sink_order_key_errors_total", testutil.ToFloat64(m.order.keyErrors.WithLabelValues("crm")), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf(`%s{sink="crm"} = %v, want %v`, tc.name, tc.got, tc.want)
			}
		})
	}
	var nilM *Metrics
	nilM.SinkOrder("crm", 1, 1) // a nil Metrics records nothing
	nilM.OrderKeyError("crm")
}
