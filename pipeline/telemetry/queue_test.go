package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// stallingCollector is an OTLP/HTTP collector that counts the spans it
// receives and, while stalled, holds each export until it is released.
type stallingCollector struct {
	mu       sync.Mutex
	spans    int
	requests chan struct{} // told of each export that arrives
	release  chan struct{} // closed: exports are answered
	delay    time.Duration // then each export takes this long
}

func (c *stallingCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := &coltracepb.ExportTraceServiceRequest{}
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	select {
	case c.requests <- struct{}{}:
	default:
	}
	select {
	case <-c.release:
	case <-r.Context().Done():
		return
	}
	time.Sleep(c.delay) // a slow collector
	n := 0
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	c.mu.Lock()
	c.spans += n
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (c *stallingCollector) received() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans
}

// TestFullQueueDropsAreCounted: with a collector that stalls and a queue
// of 4 (OTEL_BSP_MAX_QUEUE_SIZE), the spans that end while the queue is
// full are dropped and counted in Dropped, the queue takes spans again
// once the collector has taken it, and every span ended is either
// received by the collector or counted, none lost silently.
func TestFullQueueDropsAreCounted(t *testing.T) {
	const queue, burst = 4, 20
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
	t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	col := &stallingCollector{requests: make(chan struct{}, 1), release: make(chan struct{})}
	srv := httptest.NewServer(col)
	defer srv.Close()
	released := false
	release := func() {
		if !released {
			close(col.release)
			released = true
		}
	}
	defer release()
	tr, err := telemetry.New(telemetry.Options{Endpoint: srv.URL, Protocol: "http/protobuf", SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	ended := 0
	end := func() {
		telemetry.EndAppend(tr.StartAppend([]pipeline.Entry{{Event: pipeline.Event{ID: "ev"}}}), nil)
		ended++
	}
	end()
	select { // the first span's export is held by the collector
	case <-col.requests:
	case <-time.After(10 * time.Second):
		t.Fatal("the collector got no export")
	}
	for range burst {
		end()
	}
	// The exporter is busy with the first span: the queue takes 4, the
	// others are dropped at once, while they end.
	if got, want := tr.Dropped(), int64(burst-queue); got != want {
		t.Errorf("Dropped() with the queue full = %d, want %d (%d spans ended into a queue of %d)", got, want, burst, queue)
	}
	release()
	// Once the queue has been exported, it takes spans again: the count
	// of spans waiting went back to 0 (had it kept the dropped ones, or
	// missed an export, every span from now on would be dropped).
	for deadline := time.Now().Add(10 * time.Second); col.received() < 1+queue; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the collector received %d spans within 10s of its release, want %d", col.received(), 1+queue)
		}
	}
	droppedBefore := tr.Dropped()
	for range queue {
		end()
	}
	if got := tr.Dropped(); got != droppedBefore {
		t.Errorf("Dropped() after the queue was exported and %d spans ended = %d, want %d: the queue no longer takes spans", queue, got, droppedBefore)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if got, dropped := col.received(), tr.Dropped(); got != 1+2*queue || got+int(dropped) != ended {
		t.Errorf("the collector received %d spans and %d were counted dropped, of %d ended; want %d received, and every span in one or the other",
			got, dropped, ended, 1+2*queue)
	}
}

// TestConcurrentSpansAllAccountedFor: spans ended by many goroutines at
// once into a small queue before a slow collector are each either received
// by the collector or counted in Dropped: the batch span processor never
// drops one silently behind the count.
func TestConcurrentSpansAllAccountedFor(t *testing.T) {
	const workers, each = 4, 500
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
	t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	col := &stallingCollector{requests: make(chan struct{}, 1), release: make(chan struct{}), delay: 200 * time.Microsecond}
	close(col.release)
	srv := httptest.NewServer(col)
	defer srv.Close()
	tr, err := telemetry.New(telemetry.Options{Endpoint: srv.URL, Protocol: "http/protobuf", SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				telemetry.EndAppend(tr.StartAppend([]pipeline.Entry{{Event: pipeline.Event{ID: "ev"}}}), nil)
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	got, dropped := col.received(), tr.Dropped()
	if got >= workers*each {
		t.Fatalf("premise: the collector received all %d spans: the queue never filled", got)
	}
	if got+int(dropped) != workers*each {
		t.Errorf("the collector received %d spans and %d were counted dropped: %d, want the %d ended", got, dropped, got+int(dropped), workers*each)
	}
}
