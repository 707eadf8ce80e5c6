// Package metrics holds the Prometheus metrics of pipelined: what ingest,
// the writer, the dispatchers and the plugin host count, and the gauges
// (queue depth, oldest queued event, log size) read at scrape time from
// functions the daemon supplies.
//
// Every method of [*Metrics] does nothing on a nil receiver, so a package
// or a test that wants no metrics passes none.
//
// Label values come from the configuration (source, route and sink names)
// or from small fixed sets (the Outcome constants, "when"/"transform",
// "ok"/"failed"), never from request data, so the number of series stays
// bounded.
package metrics

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Outcomes of an ingest request, the outcome label of
// pipelined_ingest_requests_total. Everything but Accepted and Duplicate
// is a rejection, named for its class.
const (
	OutcomeAccepted             = "accepted"               // 2xx, appended
	OutcomeDuplicate            = "duplicate"              // 2xx, absorbed by an earlier event (P4)
	OutcomeBadJSON              = "bad_json"               // 400
	OutcomeReadError            = "read_error"             // 400, the body could not be read; 408, not in time (read_timeout)
	OutcomeUnauthorized         = "unauthorized"           // 401
	OutcomeForbidden            = "forbidden"              // 403, allow_cidrs
	OutcomeNotFound             = "not_found"              // 404, with source ""
	OutcomeMethodNotAllowed     = "method_not_allowed"     // 405
	OutcomeTooLarge             = "too_large"              // 413
	OutcomeUnsupportedMediaType = "unsupported_media_type" // 415
	OutcomeRateLimited          = "rate_limited"           // 429
	OutcomeUnavailable          = "unavailable"            // 503: overloaded, disk full, shutting down
	OutcomeCanceled             = "canceled"               // the client left before the event was durable
	OutcomeUnprocessable        = "unprocessable"          // 422: the source's accept rule or schema refused the body
	OutcomeIgnored              = "ignored"                // 200 {"ignored": true}: the source's ignore rule was true; not stored
)

// sourceOutcomes are the outcomes a known source's requests can have
// (OutcomeNotFound goes with source "" only), created at zero by
// [Metrics.InitSource].
var sourceOutcomes = []string{
	OutcomeAccepted, OutcomeDuplicate, OutcomeBadJSON, OutcomeReadError, OutcomeUnauthorized,
	OutcomeForbidden, OutcomeMethodNotAllowed, OutcomeTooLarge, OutcomeUnsupportedMediaType,
	OutcomeRateLimited, OutcomeUnavailable, OutcomeCanceled, OutcomeUnprocessable, OutcomeIgnored,
}

// Buckets, in seconds: from 100 µs (an fsync is about 300 µs) to 10 s.
var durationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// deliveryBuckets extend durationBuckets to the 60 s default call timeout.
var deliveryBuckets = append(append([]float64(nil), durationBuckets...), 30, 60)

// batchBuckets count entries: 1, 2, 4, … 2048 (writer batches stop at
// 1024 by default, sink batches at 500).
var batchBuckets = prometheus.ExponentialBuckets(1, 2, 12)

// QueueSample is one sink's queue as the scrape sees it; see
// [Metrics.SetQueueSource].
type QueueSample struct {
	Sink string
	// Ready, Retrying and Dead count the queue's entries (Ready includes
	// the leased ones), as pipeline.QueueStats.
	Ready, Retrying, Dead int
	// Oldest is the ReceivedAt of the oldest event still waiting in the
	// queue (ready, leased or retrying), zero when there is none.
	Oldest time.Time
	// Rebuilding is true while the log rebuilds its queues after the
	// start, when the counts are not known yet: the scrape leaves the
	// sink's queue metrics out and sets pipelined_queues_rebuilding.
	Rebuilding bool
	// Paused is true while an operator holds the sink's delivery
	// (`pipelined sinks pause`): pipelined_sink_paused.
	Paused bool
	// Ordered is true for a sink with delivery.order_key: HeldKeys keys
	// hold Held events back (pipelined_sink_order_held_keys and
	// pipelined_sink_order_held_events).
	Ordered        bool
	HeldKeys, Held int
}

// Metrics is every metric of one pipelined process. Create it with [New];
// a nil *Metrics is valid and records nothing. Its methods are safe for
// concurrent use.
type Metrics struct {
	gatherer prometheus.Gatherer

	ingestRequests *prometheus.CounterVec
	ingestDuration *prometheus.HistogramVec
	routeMatches   *prometheus.CounterVec
	ruleErrors     *prometheus.CounterVec
	dedupErrors    *prometheus.CounterVec

	writerBatch   prometheus.Histogram
	writerCommit  prometheus.Histogram
	writerFailure prometheus.Counter

	deliveries       *prometheus.CounterVec
	deliveryFailures *prometheus.CounterVec
	deliveryDuration *prometheus.HistogramVec
	deliveryBatch    *prometheus.HistogramVec

	pluginRestarts *prometheus.CounterVec
	sinkUp         *prometheus.GaugeVec
	breakerOpen    *prometheus.GaugeVec
	reloads        *prometheus.CounterVec
	reloadOK       prometheus.Gauge

	rejectionsDropped *prometheus.CounterVec
	rejectionsEvicted *prometheus.CounterVec

	order orderMetrics // per-key order; see order.go

	state *stateCollector
}

// New creates the metrics and registers them on reg; a nil reg means a new
// registry of their own. [Metrics.Handler] serves reg when it is also a
// [prometheus.Gatherer] (a *prometheus.Registry is). New panics if a
// metric is registered on reg already (two New calls on one registry).
func New(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		ingestRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_ingest_requests_total",
			Help: "Webhook requests answered, by source and outcome (accepted, duplicate, or the class of the rejection). Requests to an unknown path count under source=\"\".",
		}, []string{"source", "outcome"}),
		ingestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pipelined_ingest_duration_seconds",
			Help:    "Time from the start of a webhook request to its 2xx answer (accepted or duplicate), group commit and fsync included, by source.",
			Buckets: durationBuckets,
		}, []string{"source"}),
		routeMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_route_matches_total",
			Help: "Events appended with a target of the route (its when expression selected them), by route; duplicates are not counted.",
		}, []string{"route"}),
		ruleErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_rule_errors_total",
			Help: "Rule expressions that failed on an event, by route and expression: a route's when or transform, or a source's accept, ignore or schema (route is then the source's name). A failed transform sends the event to the dead-letter queue of the route's sinks.",
		}, []string{"route", "expr"}),
		dedupErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_dedup_key_errors_total",
			Help: "Events whose dedup_key expression failed, by source; they are accepted without dedup.",
		}, []string{"source"}),
		writerBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pipelined_writer_batch_size",
			Help:    "Entries per group commit: the requests one durable append (one fsync) serves.",
			Buckets: batchBuckets,
		}),
		writerCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pipelined_writer_commit_duration_seconds",
			Help:    "Duration of one durable append to the event log, its fsync included.",
			Buckets: durationBuckets,
		}),
		writerFailure: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipelined_writer_commit_failures_total",
			Help: "Durable appends that failed (disk full, log closed, I/O error); their requests were answered 503.",
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_deliveries_total",
			Help: "Events handed to a sink, by sink and outcome: delivered, retried (scheduled again), not_attempted (not sent by the sink, queued again without an attempt counted) or dead (moved to the dead-letter queue).",
		}, []string{"sink", "outcome"}),
		deliveryFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_delivery_call_failures_total",
			Help: "Deliver calls that failed as a whole (plugin down, timeout, bad answer), by sink; their events are retried.",
		}, []string{"sink"}),
		deliveryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pipelined_delivery_duration_seconds",
			Help:    "Duration of one Deliver call to a sink's plugin, by sink.",
			Buckets: deliveryBuckets,
		}, []string{"sink"}),
		deliveryBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pipelined_delivery_batch_size",
			Help:    "Events per Deliver call, by sink.",
			Buckets: batchBuckets,
		}, []string{"sink"}),
		pluginRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_plugin_restarts_total",
			Help: "Times a sink's plugin process was started again after it exited, broke or failed to start, by sink.",
		}, []string{"sink"}),
		sinkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipelined_sink_up",
			Help: "1 while a sink's plugin process runs, 0 while it is starting, waiting to be restarted, failed or stopped, by sink.",
		}, []string{"sink"}),
		breakerOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipelined_sink_breaker_open",
			Help: "1 while the sink's circuit breaker is open (delivery.breaker_failures failed calls in a row: only probes are sent), else 0, by sink.",
		}, []string{"sink"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_reloads_total",
			Help: "Configuration reloads, by result (ok, or failed: the old configuration keeps running).",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipelined_last_reload_successful",
			Help: "1 if the last configuration reload succeeded (or none was tried yet), 0 if it failed.",
		}),
		rejectionsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_rejections_dropped_total",
			Help: "Rejected requests that keep_rejected would have kept but that were not, because the audit queue was full or the log refused them, by source.",
		}, []string{"source"}),
		rejectionsEvicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipelined_rejections_evicted_total",
			Help: "Kept rejected requests dropped, oldest first, to keep a source's under its keep_rejected_max, by source.",
		}, []string{"source"}),
		state: newStateCollector(),
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("failed")
	m.reloadOK.Set(1)
	reg.MustRegister(
		m.ingestRequests, m.ingestDuration, m.routeMatches, m.ruleErrors, m.dedupErrors,
		m.writerBatch, m.writerCommit, m.writerFailure,
		m.deliveries, m.deliveryFailures, m.deliveryDuration, m.deliveryBatch,
		m.pluginRestarts, m.sinkUp, m.breakerOpen, m.reloads, m.reloadOK,
		m.rejectionsDropped, m.rejectionsEvicted,
		m.state,
	)
	m.order = newOrderMetrics()
	reg.MustRegister(m.order.collectors()...)
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	}
	return m
}

// Handler serves the registry given to [New] in the Prometheus text format,
// for /metrics on the admin listener. A collector that fails (a queue that
// cannot be read) is left out of the answer and logged by promhttp's
// error handling, and the rest is still served. On a nil *Metrics, or when
// the registry is not a Gatherer, it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil || m.gatherer == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: false,
	})
}

// RejectionDropped counts a rejected request of source that was to be kept
// (keep_rejected) but was not.
func (m *Metrics) RejectionDropped(source string) {
	if m == nil {
		return
	}
	m.rejectionsDropped.WithLabelValues(source).Inc()
}

// RejectionsEvicted counts n kept rejections of source dropped, oldest
// first, to stay under its keep_rejected_max.
func (m *Metrics) RejectionsEvicted(source string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.rejectionsEvicted.WithLabelValues(source).Add(float64(n))
}

// IngestRequest records one webhook request: its source ("" for an
// unknown path), its outcome (one of the Outcome constants) and how long
// it took. The duration is observed only for 2xx answers (accepted or
// duplicate), so that quick rejections do not hide slow acknowledgements.
func (m *Metrics) IngestRequest(source, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.ingestRequests.WithLabelValues(source, outcome).Inc()
	if outcome == OutcomeAccepted || outcome == OutcomeDuplicate {
		m.ingestDuration.WithLabelValues(source).Observe(d.Seconds())
	}
}

// RouteMatched records that route selected an event.
func (m *Metrics) RouteMatched(route string) {
	if m == nil {
		return
	}
	m.routeMatches.WithLabelValues(route).Inc()
}

// RuleError records that route's expr failed on an event: a route's
// "when" or "transform", or (route being the source's name) a source's
// "accept", "ignore" or "schema".
func (m *Metrics) RuleError(route, expr string) {
	if m == nil {
		return
	}
	m.ruleErrors.WithLabelValues(route, expr).Inc()
}

// DedupKeyError records that source's dedup_key expression failed.
func (m *Metrics) DedupKeyError(source string) {
	if m == nil {
		return
	}
	m.dedupErrors.WithLabelValues(source).Inc()
}

// WriterCommit records one durable append of entries entries that took d.
// A failed append (err != nil) counts as a failure and is not observed in
// the histograms.
func (m *Metrics) WriterCommit(entries int, d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.writerFailure.Inc()
		return
	}
	m.writerBatch.Observe(float64(entries))
	m.writerCommit.Observe(d.Seconds())
}

// Delivery records one settled batch of sink: how many of its events were
// delivered, retried, not attempted by the sink (sdk.NotAttempted: queued
// again without an attempt counted) and moved to the dead-letter queue,
// how long the Deliver call took, and the call's error if it failed as a
// whole (its events are then counted as retried or dead). It fits
// dispatch.Report.
func (m *Metrics) Delivery(sink string, delivered, retried, notAttempted, dead int, d time.Duration, err error) {
	if m == nil {
		return
	}
	if delivered > 0 {
		m.deliveries.WithLabelValues(sink, "delivered").Add(float64(delivered))
	}
	if retried > 0 {
		m.deliveries.WithLabelValues(sink, "retried").Add(float64(retried))
	}
	if notAttempted > 0 {
		m.deliveries.WithLabelValues(sink, "not_attempted").Add(float64(notAttempted))
	}
	if dead > 0 {
		m.deliveries.WithLabelValues(sink, "dead").Add(float64(dead))
	}
	if err != nil {
		m.deliveryFailures.WithLabelValues(sink).Inc()
	}
	m.deliveryDuration.WithLabelValues(sink).Observe(d.Seconds())
	m.deliveryBatch.WithLabelValues(sink).Observe(float64(delivered + retried + notAttempted + dead))
}

// SinkUp records whether sink's plugin process runs (pipelined_sink_up).
func (m *Metrics) SinkUp(sink string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.sinkUp.WithLabelValues(sink).Set(v)
}

// PluginRestart records that sink's plugin process was started again.
func (m *Metrics) PluginRestart(sink string) {
	if m == nil {
		return
	}
	m.pluginRestarts.WithLabelValues(sink).Inc()
}

// Reload records a configuration reload: ok when err is nil, else failed.
func (m *Metrics) Reload(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reloads.WithLabelValues("failed").Inc()
		m.reloadOK.Set(0)
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
	m.reloadOK.Set(1)
}

// InitSource creates the per-source counters of source at zero, one for
// each outcome a request can have, so that increase() and rate() see the
// first refusal or 503: a counter that appears at 1 has no earlier sample
// to rise from, and an alert on its increase would miss it. Ingest calls
// it for each source it serves.
func (m *Metrics) InitSource(source string) {
	if m == nil {
		return
	}
	for _, o := range sourceOutcomes {
		m.ingestRequests.WithLabelValues(source, o)
	}
	m.dedupErrors.WithLabelValues(source)
}

// InitRuleError creates the rule_errors_total counter of route's expr at
// zero (see [Metrics.InitSource]): ingest calls it for each route's when
// and transform and each source's accept, ignore and schema, so that the
// first failure after a start is a rise from 0, not a series that
// appears at the value it had before the restart.
func (m *Metrics) InitRuleError(route, expr string) {
	if m == nil {
		return
	}
	m.ruleErrors.WithLabelValues(route, expr)
}

// RemoveSink deletes every series of sink (the daemon calls it when a
// reload removes the sink): a sink with no plugin is not "down", and its
// counters would keep alerts on it alive. The queue gauges of a removed
// sink whose events wait still come from [Metrics.SetQueueSource].
func (m *Metrics) RemoveSink(sink string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"sink": sink}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.deliveries, m.deliveryFailures, m.deliveryDuration, m.deliveryBatch,
		m.pluginRestarts, m.sinkUp, m.breakerOpen,
		m.order.keyErrors,
	} {
		v.DeletePartialMatch(l)
	}
}

// InitSink creates the per-sink series of sink at zero, so that rate() and
// increase() see the first dead letter, failed call or restart (see
// [Metrics.InitSource]). The daemon calls it for each sink it starts.
func (m *Metrics) InitSink(sink string) {
	if m == nil {
		return
	}
	for _, o := range []string{"delivered", "retried", "not_attempted", "dead"} {
		m.deliveries.WithLabelValues(sink, o)
	}
	m.deliveryFailures.WithLabelValues(sink)
	m.pluginRestarts.WithLabelValues(sink)
	m.breakerOpen.WithLabelValues(sink)
}

// SinkBreaker records whether sink's circuit breaker is open.
func (m *Metrics) SinkBreaker(sink string, open bool) {
	if m == nil {
		return
	}
	v := 0.0
	if open {
		v = 1
	}
	m.breakerOpen.WithLabelValues(sink).Set(v)
}

// SetQueueSource sets the function that reports every sink's queue at
// scrape time, for pipelined_queue_depth, pipelined_dead_letters,
// pipelined_queue_oldest_age_seconds and pipelined_queues_rebuilding. Its
// ctx is bounded by the scrape (5 s); with an error it returns the samples
// of the sinks that answered, which are reported (the others are not, in
// that scrape). nil removes it.
func (m *Metrics) SetQueueSource(f func(ctx context.Context) ([]QueueSample, error)) {
	if m == nil {
		return
	}
	m.state.queues.Store(&f)
}

// SetLogSize sets the function that reports the event log's size on disk
// at scrape time, for pipelined_log_size_bytes, in bytes by kind. The kinds
// and what each counts are the backend's to name and document (badgerlog's
// DB.Sizes); a backend that keeps no local files reports none. nil removes
// it.
func (m *Metrics) SetLogSize(f func() map[string]int64) {
	if m == nil {
		return
	}
	m.state.logSize.Store(&f)
}

// scrapeTimeout bounds the queue source during one scrape.
const scrapeTimeout = 5 * time.Second

// stateCollector reads the gauges from the daemon's functions at scrape
// time, so they cost nothing between scrapes and are never stale.
type stateCollector struct {
	queues  atomic.Pointer[func(context.Context) ([]QueueSample, error)]
	logSize atomic.Pointer[func() map[string]int64]

	depth, dead, oldest, size, rebuilding, paused *prometheus.Desc
	heldKeys, held                                *prometheus.Desc
	now                                           func() time.Time
}

func newStateCollector() *stateCollector {
	return &stateCollector{
		depth: prometheus.NewDesc("pipelined_queue_depth",
			"Entries waiting in a sink's queue, by sink and state: ready (new or being delivered) or retrying (waiting for their retry time).",
			[]string{"sink", "state"}, nil),
		dead: prometheus.NewDesc("pipelined_dead_letters",
			"Entries in a sink's dead-letter queue, by sink.",
			[]string{"sink"}, nil),
		oldest: prometheus.NewDesc("pipelined_queue_oldest_age_seconds",
			"Age of the oldest event still waiting in a sink's queue (ready or retrying), by sink; 0 when the queue is empty.",
			[]string{"sink"}, nil),
		size: prometheus.NewDesc("pipelined_log_size_bytes",
			"Size of the event log on disk, by kind, as the log's backend names them (the badger backend: lsm, vlog, wal; see its documentation). Not reported for a backend that keeps no local files.",
			[]string{"kind"}, nil),
		paused: prometheus.NewDesc("pipelined_sink_paused",
			"1 while an operator holds the sink's delivery (pipelined sinks pause; kept across restarts), else 0, by sink: its events wait in the log meanwhile.",
			[]string{"sink"}, nil),
		rebuilding: prometheus.NewDesc("pipelined_queues_rebuilding",
			"1 while the event log rebuilds the sinks' queues after the start (a backlog of millions takes seconds; delivery starts after it), when the queue metrics are left out; else 0.",
			nil, nil),
		heldKeys: prometheus.NewDesc("pipelined_sink_order_held_keys",
			"Keys of a sink with delivery.order_key that hold events back behind one of theirs in flight, retrying or (order_on_dead = \"block\") dead, by sink.",
			[]string{"sink"}, nil),
		held: prometheus.NewDesc("pipelined_sink_order_held_events",
			"Events of a sink with delivery.order_key held back behind an earlier event of their key, by sink.",
			[]string{"sink"}, nil),
		now: time.Now,
	}
}

// Describe implements [prometheus.Collector].
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.dead
	ch <- c.oldest
	ch <- c.size
	ch <- c.rebuilding
	ch <- c.paused
	ch <- c.heldKeys
	ch <- c.held
}

// Collect implements [prometheus.Collector].
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if f := c.logSize.Load(); f != nil && *f != nil {
		for kind, n := range (*f)() {
			ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(n), kind)
		}
	}
	f := c.queues.Load()
	if f == nil || *f == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	// The samples it has, even with an error: the sinks whose queues
	// could not be counted are left out (the error says which), the others
	// are reported.
	samples, err := (*f)(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.depth, err)
		if len(samples) == 0 {
			return
		}
	}
	now := c.now()
	rebuilding := 0.0
	for _, s := range samples {
		paused := 0.0
		if s.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, s.Sink)
		if s.Ordered {
			ch <- prometheus.MustNewConstMetric(c.heldKeys, prometheus.GaugeValue, float64(s.HeldKeys), s.Sink)
			ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(s.Held), s.Sink)
		}
		if s.Rebuilding {
			rebuilding = 1
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(s.Ready), s.Sink, "ready")
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(s.Retrying), s.Sink, "retrying")
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(s.Dead), s.Sink)
		age := 0.0
		if !s.Oldest.IsZero() {
			age = max(0, now.Sub(s.Oldest).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, s.Sink)
	}
	ch <- prometheus.MustNewConstMetric(c.rebuilding, prometheus.GaugeValue, rebuilding)
}

// Counts is a snapshot of the counters the admin UI draws rates from.
type Counts struct {
	// Requests counts webhook requests by source, then outcome
	// (pipelined_ingest_requests_total).
	Requests map[string]map[string]float64
	// Delivered counts events delivered, by sink
	// (pipelined_deliveries_total{outcome="delivered"}).
	Delivered map[string]float64
}

// Counts reads the counters of [Counts] without gathering the rest of the
// registry. On a nil *Metrics it returns empty maps.
func (m *Metrics) Counts() Counts {
	c := Counts{Requests: map[string]map[string]float64{}, Delivered: map[string]float64{}}
	if m == nil {
		return c
	}
	each := func(v *prometheus.CounterVec, f func(labels map[string]string, n float64)) {
		ch := make(chan prometheus.Metric, 64)
		go func() { v.Collect(ch); close(ch) }()
		for mt := range ch {
			var d dto.Metric
			if mt.Write(&d) != nil || d.GetCounter() == nil {
				continue
			}
			l := map[string]string{}
			for _, lp := range d.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			f(l, d.GetCounter().GetValue())
		}
	}
	each(m.ingestRequests, func(l map[string]string, n float64) {
		if c.Requests[l["source"]] == nil {
			c.Requests[l["source"]] = map[string]float64{}
		}
		c.Requests[l["source"]][l["outcome"]] = n
	})
	each(m.deliveries, func(l map[string]string, n float64) {
		if l["outcome"] == "delivered" {
			c.Delivered[l["sink"]] = n
		}
	})
	return c
}
