// Package telemetry is pipelined's OpenTelemetry tracing: the tracer that
// [telemetry] in pipeline.toml sets up, and the hooks that ingest, the
// writer and the dispatchers call to make one trace of a webhook's life,
// from the sender's request through the durable append to each attempt of
// each sink, joined to the sender's trace when it sent a W3C traceparent.
//
// Off means off: a nil *Tracer is the tracer of a daemon without an
// otlp_endpoint. Callers test for nil before they call a hook, and the
// hooks that take a context or a span do nothing, without allocating, when
// that holds no recording span.
package telemetry

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"

	"github.com/pipelined/pipelined/pipeline/internal/lograte"
)

// ScopeName is the instrumentation scope of every span pipelined makes.
const ScopeName = "github.com/pipelined/pipelined"

// Options configures a [Tracer]; see config.Telemetry for the keys.
type Options struct {
	// Endpoint is the collector's URL (http:// or https://).
	Endpoint string
	// Protocol is "grpc" or "http/protobuf".
	Protocol string
	// ServiceName is service.name; Version service.version.
	ServiceName, Version string
	// SampleRatio is the share of traces sampled, 0 to 1.
	SampleRatio float64
	// Headers are sent with every export (an exporter token).
	Headers map[string]string
	// TLS, when not nil, is the client TLS config for an https endpoint;
	// nil means the system's roots.
	TLS *tls.Config
	// Logger receives export failures and spans dropped on a full export
	// queue, at most one line a minute of each; nil discards them.
	Logger *slog.Logger
}

// Tracer makes pipelined's spans and exports them over OTLP. A nil
// *Tracer is off.
type Tracer struct {
	tp     *sdktrace.TracerProvider
	tr     trace.Tracer
	prop   propagation.TraceContext
	failed atomic.Int64 // spans an export failed to deliver

	// The export queue (see queueGate): its bound, the sampled spans
	// ended and not yet handed to the exporter, those dropped because
	// that was the bound, and the log of those drops.
	queueMax int64
	queued   atomic.Int64
	full     atomic.Int64
	fullLog  lograte.Every
	log      *slog.Logger
}

// New starts a tracer that exports to o.Endpoint. It does not connect:
// an unreachable or slow collector costs exports (counted by
// [Tracer.Dropped]), never a webhook.
func New(o Options) (*Tracer, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("telemetry: otlp_endpoint %q is not an http:// or https:// URL", o.Endpoint)
	}
	var exp sdktrace.SpanExporter
	ctx := context.Background()
	switch o.Protocol {
	case "grpc", "":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(u.Host), otlptracegrpc.WithHeaders(o.Headers),
			otlptracegrpc.WithTimeout(10 * time.Second), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false})}
		if u.Scheme == "http" {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else {
			t := o.TLS
			if t == nil {
				t = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(t)))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case "http/protobuf":
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(o.Endpoint), otlptracehttp.WithHeaders(o.Headers),
			otlptracehttp.WithTimeout(10 * time.Second), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false})}
		if u.Path == "" || u.Path == "/" {
			opts = append(opts, otlptracehttp.WithURLPath("/v1/traces"))
		}
		if u.Scheme == "https" && o.TLS != nil {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(o.TLS))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("telemetry: unknown protocol %q (write \"grpc\" or \"http/protobuf\")", o.Protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: exporter: %w", err)
	}
	t := &Tracer{queueMax: int64(queueSize()), log: o.Logger, fullLog: lograte.Every{Period: time.Minute}}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	setErrorHandler(o.Logger)
	name := o.ServiceName
	if name == "" {
		name = "pipelined"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", name)}
	if o.Version != "" {
		attrs = append(attrs, attribute.String("service.version", o.Version))
	}
	// A sender that sampled its trace out is followed; one that sampled it
	// in is sampled at SampleRatio too, by trace id, so that every
	// pipelined span of a trace (ingest, append, each attempt, later too)
	// makes the same choice. The ratio sampler reads the trace id's last 8
	// bytes, which a sender's traceparent chooses: a sender can pick ids
	// that are always kept (README, "Tracing").
	ratio := sdktrace.TraceIDRatioBased(o.SampleRatio)
	sampler := sdktrace.ParentBased(ratio, sdktrace.WithRemoteParentSampled(ratio))
	// The batch span processor (OTEL_BSP_* variables tune it) drops a
	// span when its queue is full and counts it where we cannot read it
	// (its own counter is private; its metric is an experimental,
	// environment-gated, process-wide option). queueGate bounds the queue
	// in front of it instead, and counts what it drops; the processor's
	// own queue is made a little longer, so it never drops one itself.
	bsp := sdktrace.NewBatchSpanProcessor(countingExporter{exp, t}, sdktrace.WithMaxQueueSize(int(t.queueMax)+queueSlack))
	t.start(sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSpanProcessor(queueGate{bsp, t}),
	))
	return t, nil
}

// queueSlack is how much longer than the bound of queueGate the batch
// span processor's queue is: room for the markers ForceFlush puts in it.
const queueSlack = 16

// queueSize is the export queue's bound: OTEL_BSP_MAX_QUEUE_SIZE as the
// OpenTelemetry SDK reads it, 2048 when it is unset or not a number, and
// 2048 too when it is below 1 (the SDK would then drop every span, or
// panic).
func queueSize() int {
	n, err := strconv.Atoi(os.Getenv("OTEL_BSP_MAX_QUEUE_SIZE"))
	if err != nil || n < 1 {
		return sdktrace.DefaultMaxQueueSize
	}
	return n
}

// queueGate is the span processor of a [Tracer]: it hands each sampled
// span that ends to the batch span processor, unless queueMax spans are
// already waiting to be exported; then it drops the span and counts it
// (the processor would have dropped it silently). What it costs a span is
// an atomic add, and one per export: no lock.
//
// t.queued counts the spans handed on and not yet handed to the exporter,
// so it is never below the processor's queue length (which holds a subset
// of them): with t.queued <= queueMax, the processor's queue of
// queueMax+queueSlack never overflows.
type queueGate struct {
	sdktrace.SpanProcessor // the batch span processor
	t                      *Tracer
}

func (g queueGate) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return // the batch span processor ignores these
	}
	t := g.t
	if t.queued.Add(1) > t.queueMax {
		t.queued.Add(-1)
		t.full.Add(1)
		if ok, n := t.fullLog.Allow(); ok {
			t.log.Warn("tracing: spans dropped, the export queue is full: the collector takes them more slowly than they are made "+
				"(webhooks are not affected; see pipelined_trace_spans_dropped_total; OTEL_BSP_MAX_QUEUE_SIZE bounds the queue)",
				"queue", t.queueMax, "suppressed", n)
		}
		return
	}
	g.SpanProcessor.OnEnd(s)
}

func (t *Tracer) start(tp *sdktrace.TracerProvider) {
	t.tp = tp
	t.tr = tp.Tracer(ScopeName)
}

// Shutdown exports what is pending, within ctx, and stops the tracer.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Dropped counts the spans that were not exported: those an export
// failed to deliver (collector unreachable or refusing) and those dropped
// because the export queue was full (a collector slower than spans are
// made; OTEL_BSP_MAX_QUEUE_SIZE bounds the queue). 0 for a nil tracer.
func (t *Tracer) Dropped() int64 {
	if t == nil {
		return 0
	}
	return t.failed.Load() + t.full.Load()
}

// setErrorHandler sends OpenTelemetry's errors (a failed export, say) to
// log, at most one line a minute, instead of the standard logger's plain
// lines on stderr. The handler is process-wide, as OpenTelemetry's is.
func setErrorHandler(log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lines := lograte.Every{Period: time.Minute}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		if ok, n := lines.Allow(); ok {
			log.Warn("tracing: spans not exported (webhooks are not affected; see pipelined_trace_spans_dropped_total)",
				"err", err, "suppressed", n)
		}
	}))
}

// countingExporter counts the spans its exporter failed to export, and
// takes those it is handed off the export queue's count (queueGate).
type countingExporter struct {
	sdktrace.SpanExporter
	t *Tracer
}

func (e countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.t.queued.Add(-int64(len(spans)))
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		e.t.failed.Add(int64(len(spans)))
	}
	return err
}

// remote returns the span context a stored traceparent / tracestate pair
// names, marked remote; an invalid one when they name none.
func remote(traceparent, tracestate string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	c := carrier{traceparent: traceparent, tracestate: tracestate}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), &c))
}

// carrier is a propagation.TextMapCarrier of the two W3C headers.
type carrier struct{ traceparent, tracestate string }

func (c *carrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.traceparent
	case "tracestate":
		return c.tracestate
	}
	return ""
}

func (c *carrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.traceparent = value
	case "tracestate":
		c.tracestate = value
	}
}

func (c *carrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// inject returns the W3C headers of sc.
func inject(sc trace.SpanContext) (traceparent, tracestate string) {
	var c carrier
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), &c)
	return c.traceparent, c.tracestate
}

// LogArgs returns the slog arguments trace_id and span_id of a W3C
// traceparent, nil when it is not one: lines about a request or a delivery
// carry them so that a log line leads to its trace.
func LogArgs(traceparent string) []any {
	// version "-" trace-id (32 hex) "-" parent-id (16 hex) "-" flags
	if len(traceparent) < 55 || traceparent[2] != '-' || traceparent[35] != '-' || traceparent[52] != '-' {
		return nil
	}
	return []any{"trace_id", traceparent[3:35], "span_id", traceparent[36:52]}
}

// errorStatus marks sp as failed with err's text.
func errorStatus(sp trace.Span, err error) {
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
}

// LogAttrs returns the trace_id and span_id of the span in ctx as log
// attributes, nil when ctx holds none (tracing off).
func LogAttrs(ctx context.Context) []slog.Attr {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []slog.Attr{slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String())}
}

// NewWithProvider returns a tracer that makes its spans with tp instead of
// an OTLP exporter of its own: for tests, and for a program that sets up
// its exporting itself. Shutdown shuts tp down.
func NewWithProvider(tp *sdktrace.TracerProvider) *Tracer {
	t := &Tracer{}
	t.start(tp)
	return t
}
