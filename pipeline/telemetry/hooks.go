package telemetry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/sdk"
)

// StartRequest starts the server span of a webhook request, a child of the
// sender's span when the request carries a W3C traceparent (and
// tracestate), header names in any case. The returned context holds it;
// end it with [EndRequest].
func (t *Tracer) StartRequest(r *http.Request) (context.Context, trace.Span) {
	ctx := t.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	return t.tr.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method)))
}

// Stamp stores the trace context of the request span in ctx with e, so that
// the log keeps it and every delivery attempt joins the trace.
func Stamp(ctx context.Context, e *pipeline.Event) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	e.TraceParent, e.TraceState = inject(sc)
}

// Appended records on the request span in ctx the event id the log
// answered, whether it was a duplicate, and the dedup key, as a hash only.
func Appended(ctx context.Context, id, dedupKey string, duplicate bool) {
	sp := trace.SpanFromContext(ctx)
	if !sp.IsRecording() {
		return
	}
	sp.SetAttributes(attribute.String("pipelined.event_id", id), attribute.Bool("pipelined.duplicate", duplicate))
	if dedupKey != "" {
		sp.SetAttributes(attribute.String("pipelined.dedup_key.sha256", HashKey(dedupKey)))
	}
}

// HashKey is how a dedup key appears in a span: the hex SHA-256 of the
// key, never the key (it may be a customer's data).
func HashKey(k string) string {
	h := sha256.Sum256([]byte(k))
	return hex.EncodeToString(h[:])
}

// EndRequest ends a request span with the request's source ("" for an
// unknown path), outcome (a metrics outcome) and answered status, and,
// for a source's path only, names it by the path and sets url.path.
func EndRequest(sp trace.Span, r *http.Request, source, outcome string, status int) {
	if sp.IsRecording() {
		if source != "" {
			// A source's path: few names, and no secret. A path no
			// source has is left out: a sender's mistyped URL may
			// hold a token (/hooks/x&token=…).
			sp.SetName(r.Method + " " + r.URL.Path)
			sp.SetAttributes(attribute.String("url.path", r.URL.Path))
		}
		sp.SetAttributes(attribute.String("pipelined.source", source), attribute.String("pipelined.outcome", outcome),
			attribute.Int("http.response.status_code", status))
		if status >= 500 || status == 0 {
			sp.SetStatus(codes.Error, outcome)
		}
	}
	sp.End()
}

// StartRoute starts the span of the routing step under the request span in
// ctx; nil when ctx holds no recording span (tracing off, or not sampled).
func StartRoute(ctx context.Context) trace.Span {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return nil
	}
	_, sp := parent.TracerProvider().Tracer(ScopeName).Start(ctx, "route")
	return sp
}

// EndRoute ends a span of [StartRoute] with the sinks chosen and the
// routes that failed. A nil sp is no span.
func EndRoute(sp trace.Span, targets []pipeline.Target, errs []error) {
	if sp == nil {
		return
	}
	sinks := make([]string, len(targets))
	for i, t := range targets {
		sinks[i] = t.Sink
	}
	sp.SetAttributes(attribute.StringSlice("pipelined.sinks", sinks), attribute.Int("pipelined.route_errors", len(errs)))
	if len(errs) > 0 {
		errorStatus(sp, errors.Join(errs...))
	}
	sp.End()
}

// StartAppend starts the span of one group commit, linked to the request
// span of every entry it carries. Its parent is the first sampled of them,
// so a trace holds the append that made its event durable.
func (t *Tracer) StartAppend(entries []pipeline.Entry) trace.Span {
	links := make([]trace.Link, 0, len(entries))
	var parent trace.SpanContext
	for i := range entries {
		sc := remote(entries[i].Event.TraceParent, entries[i].Event.TraceState)
		if !sc.IsValid() {
			continue
		}
		if !parent.IsValid() || (!parent.IsSampled() && sc.IsSampled()) {
			parent = sc
		}
		links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("pipelined.event_id", entries[i].Event.ID)}})
	}
	ctx := context.Background()
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	_, sp := t.tr.Start(ctx, "append", trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("pipelined.entries", len(entries))))
	return sp
}

// EndAppend ends a span of [Tracer.StartAppend] with the append's error.
func EndAppend(sp trace.Span, err error) {
	errorStatus(sp, err)
	sp.End()
}

// StartAttempts starts one span per event of a batch that a dispatcher
// hands to sink: a consumer span in the event's trace (the context stored
// with it), linked to the request span that accepted it, as
// OpenTelemetry's messaging conventions describe for processing. It sets
// events[i].TraceContext to the attempt's span, so a sink that calls out
// joins the trace, and batch[i].Event.TraceParent to it too, for the
// dispatcher's log lines. End them with [EndAttempts].
func (t *Tracer) StartAttempts(sink string, batch []pipeline.Delivery, events []sdk.Event) []trace.Span {
	spans := make([]trace.Span, len(batch))
	for i := range batch {
		ev := &batch[i].Event
		ctx := context.Background()
		var links []trace.Link
		if sc := remote(ev.TraceParent, ev.TraceState); sc.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
			links = []trace.Link{{SpanContext: sc}}
		}
		_, sp := t.tr.Start(ctx, "deliver "+sink, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
			trace.WithAttributes(
				attribute.String("messaging.system", "pipelined"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.operation.name", "deliver"),
				attribute.String("messaging.destination.name", sink),
				attribute.String("messaging.message.id", ev.ID),
				attribute.Int("messaging.batch.message_count", len(batch)),
				attribute.String("pipelined.sink", sink),
				attribute.String("pipelined.route", batch[i].Route),
				attribute.Int("pipelined.attempt", batch[i].Attempt),
			))
		spans[i] = sp
		tp, ts := inject(sp.SpanContext())
		events[i].TraceContext = map[string]string{"traceparent": tp}
		if ts != "" {
			events[i].TraceContext["tracestate"] = ts
		}
		ev.TraceParent, ev.TraceState = tp, ts
	}
	return spans
}

// EndAttempts ends the spans of [Tracer.StartAttempts] with each event's
// settlement (delivered, retry, not_attempted, dead) and error; callErr is the error of
// the plugin call as a whole, if any.
func EndAttempts(spans []trace.Span, settle []pipeline.Settlement, callErr error) {
	for i, sp := range spans {
		if i < len(settle) {
			s := settle[i]
			sp.SetAttributes(attribute.String("pipelined.outcome", outcomeName(s)))
			if s.Outcome == pipeline.Retry && s.NotAttempted {
				// Not sent: no failure of the event's, and no attempt.
				sp.SetAttributes(attribute.String("pipelined.not_attempted_reason", s.Err))
			} else if s.Outcome != pipeline.Ack {
				msg := s.Err
				if msg == "" && callErr != nil {
					msg = callErr.Error()
				}
				sp.SetAttributes(attribute.String("error.type", outcomeName(s)))
				sp.SetStatus(codes.Error, msg)
			}
		}
		sp.End()
	}
}

func outcomeName(s pipeline.Settlement) string {
	switch s.Outcome {
	case pipeline.Ack:
		return "delivered"
	case pipeline.Retry:
		if s.NotAttempted {
			return "not_attempted"
		}
		return "retry"
	case pipeline.Dead:
		return "dead"
	}
	return "unknown"
}
