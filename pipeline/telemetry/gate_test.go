package telemetry

import (
	"context"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// nopProcessor takes spans and does nothing with them.
type nopProcessor struct{ sdktrace.SpanProcessor }

func (nopProcessor) OnEnd(sdktrace.ReadOnlySpan) {}

// TestQueueGateCostsNoAllocation: the export queue's bookkeeping, on the
// path of every span, allocates nothing, whether the span is handed on or
// dropped (the first drop's log line is written in the warm-up run).
func TestQueueGateCostsNoAllocation(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	_, sp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("t").Start(context.Background(), "s")
	sp.End()
	s := rec.Ended()[0]
	if !s.SpanContext().IsSampled() {
		t.Fatal("premise: the span is sampled")
	}
	for _, tc := range []struct {
		name     string
		max      int64
		wantFull bool
	}{{"handed on", 1 << 40, false}, {"dropped", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &Tracer{queueMax: tc.max, log: slog.New(slog.DiscardHandler)}
			g := queueGate{nopProcessor{}, tr}
			if n := testing.AllocsPerRun(1000, func() { g.OnEnd(s) }); n != 0 {
				t.Errorf("OnEnd allocates %v times, want 0", n)
			}
			if full := tr.full.Load() > 0; full != tc.wantFull {
				t.Errorf("spans dropped: %v, want %v (premise: the path measured)", full, tc.wantFull)
			}
		})
	}
}
