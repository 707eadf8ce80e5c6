package daemon

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// startTracing starts the tracer [telemetry] asks for; nil when tracing is
// off (no otlp_endpoint). A reload does not change it: [telemetry] takes
// effect on restart.
func (d *Daemon) startTracing(cfg *config.Config) (*telemetry.Tracer, error) {
	t := cfg.Telemetry
	if !t.Enabled() {
		return nil, nil
	}
	headers, err := cfg.TelemetryHeaders()
	if err != nil {
		return nil, err
	}
	tc, err := telemetryTLS(t)
	if err != nil {
		return nil, err
	}
	tr, err := telemetry.New(telemetry.Options{
		Endpoint: t.OTLPEndpoint, Protocol: t.Protocol, ServiceName: t.ServiceName, Version: d.o.Build.Version,
		SampleRatio: t.Ratio(), Headers: headers, TLS: tc, Logger: d.log.With("component", "telemetry"),
	})
	if err != nil {
		return nil, err
	}
	d.log.Info("tracing on", "otlp_endpoint", t.OTLPEndpoint, "protocol", t.Protocol, "sample_ratio", t.Ratio())
	return tr, nil
}

// stopTracing exports the spans still pending, for a few seconds at most.
func (d *Daemon) stopTracing(tr *telemetry.Tracer) {
	if tr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		d.log.Warn("spans not all exported before shutdown", "err", err)
	}
}

// tracingCollector is pipelined_trace_spans_dropped_total: the spans not
// exported (an export failed, or the export queue was full), read from the
// tracer in force.
func (d *Daemon) tracingCollector() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "pipelined_trace_spans_dropped_total",
		Help: "Spans that could not be exported to the OTLP collector ([telemetry]): the export failed, or the export queue (OTEL_BSP_MAX_QUEUE_SIZE) was full; webhooks and events are never held for them.",
	}, func() float64 { return float64(d.tracer.Load().Dropped()) })
}

// telemetryTLS builds the client TLS config of the tls_* keys; nil when
// none is set.
func telemetryTLS(t config.Telemetry) (*tls.Config, error) {
	return clientTLS("telemetry", t.TLSCAFile, t.TLSCertFile, t.TLSKeyFile, "give the CA certificate(s) that sign the collector's")
}
