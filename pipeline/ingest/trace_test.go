package ingest_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/internal/race"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// entryKeeper keeps the last entry appended.
type entryKeeper struct{ last pipeline.Entry }

func (k *entryKeeper) Append(_ context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	k.last = e
	return pipeline.Appended{ID: e.Event.ID}, nil
}

const senderParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestTracingOffCostsNoAllocation: with no otlp_endpoint (Config.Tracing
// nil), a request that carries a traceparent costs exactly the allocations
// of one that carries another header of the same size, the event stores
// no trace context, and the hooks ingest calls allocate nothing.
func TestTracingOffCostsNoAllocation(t *testing.T) {
	if race.Enabled {
		t.Skip("the race detector allocates")
	}
	body := callKaro(t)
	keep := &entryKeeper{}
	h := ingest.New(testConfig(t), keep, nil)
	allocs := func(header, value string) float64 {
		const runs = 200
		reqs := make([]*http.Request, runs+1)
		for i := range reqs {
			reqs[i] = httptest.NewRequest(http.MethodPost, hookPath, bytes.NewReader(body))
			reqs[i].Header.Set("Content-Type", "application/json")
			reqs[i].Header.Set(header, value)
		}
		recs := make([]*httptest.ResponseRecorder, runs+1)
		for i := range recs {
			recs[i] = httptest.NewRecorder()
		}
		n := 0
		return testing.AllocsPerRun(runs, func() {
			h.ServeHTTP(recs[n], reqs[n])
			if recs[n].Code != http.StatusOK {
				t.Fatalf("status %d: %s", recs[n].Code, recs[n].Body)
			}
			n++
		})
	}
	traced := allocs("Traceparent", senderParent)
	if keep.last.Event.TraceParent != "" || keep.last.Event.TraceState != "" {
		t.Errorf("tracing off: the event stores trace context %q %q, want none", keep.last.Event.TraceParent, keep.last.Event.TraceState)
	}
	plain := allocs("X-Padding-Header", senderParent)
	if traced != plain {
		t.Errorf("tracing off: a request with a traceparent costs %v allocations, one without %v; want the same", traced, plain)
	}
	ctx := context.Background()
	hooks := testing.AllocsPerRun(100, func() {
		sp := telemetry.StartRoute(ctx)
		telemetry.EndRoute(sp, nil, nil)
		_ = telemetry.LogAttrs(ctx)
		telemetry.Stamp(ctx, &keep.last.Event)
		telemetry.Appended(ctx, "id", "key", false)
	})
	if hooks != 0 {
		t.Errorf("tracing off: the telemetry hooks allocate %v times per request, want 0", hooks)
	}
	t.Logf("handler allocations per request, tracing off: %v (with traceparent) / %v (without)", traced, plain)
}

// discard is a span exporter that drops what it is given.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkHandlerTracing is BenchmarkHandler with tracing off, and on at
// sample ratios 0.01 and 1 (spans batched to an exporter that drops them):
// what tracing costs the handler per request. Requests carry no
// traceparent, so the ratio decides.
func BenchmarkHandlerTracing(b *testing.B) {
	for _, bc := range []struct {
		name  string
		ratio float64 // < 0: off
	}{{"off", -1}, {"ratio=0.01", 0.01}, {"ratio=1", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig(b)
			if bc.ratio >= 0 {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.TraceIDRatioBased(bc.ratio)), sdktrace.WithBatcher(discard{}))
				defer tp.Shutdown(context.Background())
				cfg.Tracing = telemetry.NewWithProvider(tp)
			}
			benchServe(b, ingest.New(cfg, nopAppender{}, nil))
		})
	}
}
