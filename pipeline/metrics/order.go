package metrics

import "github.com/prometheus/client_golang/prometheus"

// orderMetrics are the series of per-key order (delivery.order_key).
type orderMetrics struct {
	heldKeys  *prometheus.GaugeVec
	held      *prometheus.GaugeVec
	keyErrors *prometheus.CounterVec
}

func newOrderMetrics() orderMetrics {
	return orderMetrics{
		heldKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipelined_sink_order_held_keys",
			Help: "Keys of a sink with delivery.order_key that hold events back behind one of theirs in flight, retrying or (order_on_dead = \"block\") dead, by sink.",
		}, []string{"sink"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipelined_sink_order_held_events",
			Help: "Events of a sink with delivery.order_key held back behind an earlier event of their key, by sink.",
		}, []string{"sink"}),
		keyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_sink_order_key_errors_total",
			Help: "Events whose delivery.order_key failed or gave no key: each is delivered in a key of its own, by sink.",
		}, []string{"sink"}),
	}
}

func (o orderMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.heldKeys, o.held, o.keyErrors}
}

// SinkOrder records how many keys of sink hold events back, and how many
// events they hold.
func (m *Metrics) SinkOrder(sink string, heldKeys, held int) {
	if m == nil {
		return
	}
	m.order.heldKeys.WithLabelValues(sink).Set(float64(heldKeys))
	m.order.held.WithLabelValues(sink).Set(float64(held))
}

// OrderKeyError counts an event of sink whose order key failed.
func (m *Metrics) OrderKeyError(sink string) {
	if m == nil {
		return
	}
	m.order.keyErrors.WithLabelValues(sink).Inc()
}
