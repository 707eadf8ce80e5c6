package metrics

import "github.com/prometheus/client_golang/prometheus"

// orderMetrics are the counted series of per-key order (delivery.order_key);
// the held gauges are read at scrape time (QueueSample.Ordered).
type orderMetrics struct {
	keyErrors *prometheus.CounterVec
}

func newOrderMetrics() orderMetrics {
	return orderMetrics{
		keyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_sink_order_key_errors_total",
			Help: "Events whose delivery.order_key failed or gave no key: each is delivered in a key of its own, by sink.",
		}, []string{"sink"}),
	}
}

func (o orderMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.keyErrors}
}

// OrderKeyError counts an event of sink whose order key failed.
func (m *Metrics) OrderKeyError(sink string) {
	if m == nil {
		return
	}
	m.order.keyErrors.WithLabelValues(sink).Inc()
}
