package telemetry_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/telemetry"
	"github.com/pipelined/pipelined/sdk"
)

const (
	senderTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	senderSpan   = "00f067aa0ba902b7"
	senderParent = "00-" + senderTrace + "-" + senderSpan + "-01"
)

// TestOneTraceFromRequestToAttempt follows one event through the hooks,
// with its trace context stored as a log would store it in between: the
// request span is the sender's child, the append span is in its trace and
// linked to it, and each attempt (a restart in between changes nothing:
// only the stored strings travel) is a child of the request span, linked
// to it, with the attempt's context handed to the sink.
func TestOneTraceFromRequestToAttempt(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := telemetry.NewWithProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))

	req := httptest.NewRequest("POST", "/hooks/callkaro", nil)
	req.Header.Set("TraceParent", senderParent) // any case
	req.Header.Set("tracestate", "vendor=abc")
	ctx, sp := tr.StartRequest(req)
	route := telemetry.StartRoute(ctx)
	telemetry.EndRoute(route, []pipeline.Target{{Sink: "crm"}}, nil)
	var ev pipeline.Event
	ev.ID = "ev-1"
	telemetry.Stamp(ctx, &ev)
	if ev.TraceParent == "" || ev.TraceState != "vendor=abc" {
		t.Fatalf("Stamp: TraceParent %q TraceState %q, want the request span's context with the sender's tracestate", ev.TraceParent, ev.TraceState)
	}
	app := tr.StartAppend([]pipeline.Entry{{Event: ev}})
	telemetry.EndAppend(app, nil)
	telemetry.Appended(ctx, ev.ID, "call-1", false)
	telemetry.EndRequest(sp, req, "callkaro", "accepted", 200)

	for attempt := 1; attempt <= 2; attempt++ {
		batch := []pipeline.Delivery{{Seq: 1, Event: ev, Route: "all", Attempt: attempt}}
		events := make([]sdk.Event, 1)
		spans := tr.StartAttempts("crm", batch, events)
		if events[0].TraceContext["traceparent"] == "" || events[0].TraceContext["traceparent"] != batch[0].Event.TraceParent {
			t.Errorf("attempt %d: sdk.Event.TraceContext %v, Delivery.Event.TraceParent %q; want the attempt's span in both",
				attempt, events[0].TraceContext, batch[0].Event.TraceParent)
		}
		outcome := pipeline.Retry
		if attempt == 2 {
			outcome = pipeline.Ack
		}
		telemetry.EndAttempts(spans, []pipeline.Settlement{{Seq: 1, Outcome: outcome, Err: "503"}}, nil)
	}

	ended := rec.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		byName[s.Name()] = append(byName[s.Name()], s)
		if s.SpanContext().TraceID().String() != senderTrace {
			t.Errorf("span %q is in trace %s, want the sender's %s", s.Name(), s.SpanContext().TraceID(), senderTrace)
		}
	}
	server := byName["POST /hooks/callkaro"]
	if len(server) != 1 || server[0].Parent().SpanID().String() != senderSpan || server[0].SpanKind() != trace.SpanKindServer {
		t.Fatalf("request spans %v, want one server span, child of the sender's %s", server, senderSpan)
	}
	reqID := server[0].SpanContext().SpanID()
	if r := byName["route"]; len(r) != 1 || r[0].Parent().SpanID() != reqID {
		t.Errorf("route spans %v, want one under the request span", r)
	}
	if a := byName["append"]; len(a) != 1 || a[0].Parent().SpanID() != reqID || len(a[0].Links()) != 1 || a[0].Links()[0].SpanContext.SpanID() != reqID {
		t.Errorf("append spans %v, want one under the request span and linked to it", a)
	}
	deliver := byName["deliver crm"]
	if len(deliver) != 2 {
		t.Fatalf("deliver spans %d, want 2", len(deliver))
	}
	for i, d := range deliver {
		if d.Parent().SpanID() != reqID || len(d.Links()) != 1 || d.Links()[0].SpanContext.SpanID() != reqID || d.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("attempt %d: parent %s links %v kind %v, want a consumer span under the request span, linked to it", i+1, d.Parent().SpanID(), d.Links(), d.SpanKind())
		}
	}
	for _, a := range server[0].Attributes() {
		if a.Value.Emit() == "call-1" {
			t.Errorf("request span holds the dedup key itself (%s), want only its hash", a.Key)
		}
	}
}

func TestLogArgs(t *testing.T) {
	cases := []struct {
		in   string
		want []any
	}{
		{senderParent, []any{"trace_id", senderTrace, "span_id", senderSpan}},
		{"", nil},
		{"garbage", nil},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got := telemetry.LogArgs(c.in)
			if len(got) != len(c.want) {
				t.Fatalf("LogArgs(%q) = %v, want %v", c.in, got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("LogArgs(%q) = %v, want %v", c.in, got, c.want)
				}
			}
		})
	}
}

// TestNilTracerIsOff: a daemon without otlp_endpoint has a nil tracer.
func TestNilTracerIsOff(t *testing.T) {
	var tr *telemetry.Tracer
	if tr.Dropped() != 0 || tr.Shutdown(context.Background()) != nil {
		t.Error("a nil tracer must count nothing and shut down at once")
	}
	if _, err := telemetry.New(telemetry.Options{Endpoint: "127.0.0.1:4317"}); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("New with an endpoint that is not a URL = %v, want an error naming it", err)
	}
}
