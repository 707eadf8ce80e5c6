package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/pipelined/pipelined/tests/harness"
)

// otlpReceiver is a collector's trace service, over gRPC (Export) and over
// HTTP (POST /v1/traces, protobuf): it keeps every span it is sent.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
	names []string // service.name of each request's resources
}

func (o *otlpReceiver) add(req *coltracepb.ExportTraceServiceRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				o.names = append(o.names, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
		}
	}
}

func (o *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	o.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := &coltracepb.ExportTraceServiceRequest{}
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	o.add(req)
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// trace returns the spans of one trace (hex id).
func (o *otlpReceiver) trace(id string) []*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range o.spans {
		if hex.EncodeToString(s.GetTraceId()) == id {
			out = append(out, s)
		}
	}
	return out
}

func (o *otlpReceiver) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.spans)
}

// start serves the receiver on loopback with protocol and returns the
// otlp_endpoint to configure.
func (o *otlpReceiver) start(t *testing.T, protocol string) string {
	t.Helper()
	if protocol == "http/protobuf" {
		srv := httptest.NewServer(o)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, o)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return "http://" + ln.Addr().String()
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			v := a.GetValue()
			if v.GetStringValue() != "" {
				return v.GetStringValue()
			}
			return strconv.FormatInt(v.GetIntValue(), 10)
		}
	}
	return ""
}

func named(spans []*tracepb.Span, prefix string) []*tracepb.Span {
	var out []*tracepb.Span
	for _, s := range spans {
		if strings.HasPrefix(s.GetName(), prefix) {
			out = append(out, s)
		}
	}
	return out
}

// flakyReceiver answers 503 to the first request of each event, then 200,
// and keeps the traceparent of every request.
type flakyReceiver struct {
	mu          sync.Mutex
	steady      bool // answer 200 from the first request on
	hold        bool // answer 503 to every request while set
	seen        map[string]int
	traceparent []string
}

func (f *flakyReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := r.Header.Get("webhook-id")
	f.seen[id]++
	f.traceparent = append(f.traceparent, r.Header.Get("traceparent"))
	if f.hold || (f.seen[id] == 1 && !f.steady) {
		http.Error(w, "warming up", http.StatusServiceUnavailable)
		return
	}
}

func (f *flakyReceiver) delivered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.seen {
		if c >= 2 && f.hold {
			continue // every answer so far was 503
		}
		if c >= 2 || (f.steady && c >= 1) {
			n++
		}
	}
	return n
}

func (f *flakyReceiver) parents() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.traceparent...)
}

// traceConfig is a daemon with the CallKaro source, an http sink "crm" to
// receiverURL and [telemetry] keys.
func traceConfig(t *testing.T, receiverURL, telemetry string) string {
	dir := t.TempDir()
	return harness.WriteConfig(t, dir, harness.Listeners("")+harness.BadgerLog(filepath.Join(dir, "log"))+harness.CallKaroSource+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms", backoff_min = "50ms", backoff_max = "200ms" }

[telemetry]
%s
`, receiverURL, telemetry)+harness.AllCallsRoute("crm"))
}

// fastExport makes the daemon export spans every 50ms instead of 5s.
var fastExport = harness.Options{Env: []string{"OTEL_BSP_SCHEDULE_DELAY=50"}}

func TestTracingFollowsAWebhookToTheSinksReceiver(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			col := &otlpReceiver{}
			endpoint := col.start(t, protocol)
			crm := &flakyReceiver{seen: map[string]int{}}
			crmSrv := httptest.NewServer(crm)
			defer crmSrv.Close()
			d, err := harness.StartWith(t, traceConfig(t, crmSrv.URL, fmt.Sprintf("otlp_endpoint = %q\nprotocol = %q\nservice_name = \"hooks-e2e\"", endpoint, protocol)), fastExport)
			if err != nil {
				t.Fatal(err)
			}
			const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
			// The header's name in capitals: trace context is read whatever its case.
			h := http.Header{"TRACEPARENT": {"00-" + traceID + "-" + parentID + "-01"}}
			code, ans, err := harness.PostWith(harness.Client, d.URL+"/hooks/callkaro", "application/json", h, harness.CallEvent("trace-1", "interested"))
			if err != nil || code != 200 {
				t.Fatalf("POST with traceparent = %d %v %v", code, ans, err)
			}
			id := ans["id"].(string)
			code, ans2, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("trace-2", "interested"))
			if err != nil || code != 200 {
				t.Fatalf("POST without traceparent = %d %v %v", code, ans2, err)
			}
			id2 := ans2["id"].(string)

			var spans []*tracepb.Span
			harness.Eventually(t, 30*time.Second, func() error {
				spans = col.trace(traceID)
				if len(named(spans, "deliver crm")) < 2 || len(named(spans, "POST")) < 1 || len(named(spans, "append")) < 1 {
					return fmt.Errorf("trace %s has %d spans so far (want the request, route, append and two attempts)", traceID, len(spans))
				}
				for _, s := range named(spans, "deliver crm") {
					if attr(s, "pipelined.outcome") == "delivered" {
						return nil
					}
				}
				return fmt.Errorf("trace %s has no delivered attempt yet", traceID)
			})
			server := named(spans, "POST")[0]
			if server.GetKind() != tracepb.Span_SPAN_KIND_SERVER || hex.EncodeToString(server.GetParentSpanId()) != parentID {
				t.Errorf("request span: kind %v, parent %x; want a server span, child of the sender's %s", server.GetKind(), server.GetParentSpanId(), parentID)
			}
			if attr(server, "pipelined.event_id") != id || attr(server, "pipelined.source") != "callkaro" || attr(server, "http.response.status_code") != "200" ||
				attr(server, "pipelined.outcome") != "accepted" {
				t.Errorf("request span attributes = %v", server.GetAttributes())
			}
			if k := attr(server, "pipelined.dedup_key.sha256"); len(k) != 64 || strings.Contains(fmt.Sprint(server.GetAttributes()), "trace-1") {
				t.Errorf("request span: dedup key hash %q; the key itself must not appear: %v", k, server.GetAttributes())
			}
			if len(named(spans, "route")) != 1 {
				t.Errorf("trace has %d route spans, want 1", len(named(spans, "route")))
			}
			app := named(spans, "append")[0]
			linked := false
			for _, l := range app.GetLinks() {
				linked = linked || hex.EncodeToString(l.GetSpanId()) == hex.EncodeToString(server.GetSpanId())
			}
			if !linked {
				t.Errorf("append span links %v, want one to the request span %x", app.GetLinks(), server.GetSpanId())
			}
			attempts := map[string]string{}
			deliverIDs := map[string]bool{}
			for _, s := range named(spans, "deliver crm") {
				// When the two webhooks share a batch, the 503 to one halts it
				// and the other is not attempted (no attempt counted, no
				// request sent): such a span joins no receiver's request.
				if attr(s, "pipelined.outcome") != "not_attempted" {
					attempts[attr(s, "pipelined.attempt")] = attr(s, "pipelined.outcome")
				}
				deliverIDs[hex.EncodeToString(s.GetSpanId())] = true
				if s.GetKind() != tracepb.Span_SPAN_KIND_CONSUMER || len(s.GetLinks()) != 1 || hex.EncodeToString(s.GetLinks()[0].GetSpanId()) != hex.EncodeToString(server.GetSpanId()) {
					t.Errorf("attempt span %s: kind %v links %v; want a consumer span linked to the request span", s.GetName(), s.GetKind(), s.GetLinks())
				}
				if attr(s, "messaging.destination.name") != "crm" || attr(s, "messaging.message.id") != id || attr(s, "messaging.batch.message_count") == "" {
					t.Errorf("attempt span attributes = %v", s.GetAttributes())
				}
			}
			if attempts["1"] != "retry" || attempts["2"] != "delivered" {
				t.Errorf("attempts (number: outcome) = %v, want 1: retry (the 503), 2: delivered", attempts)
			}
			// The sink's receiver got a traceparent of the same trace, whose
			// parent is an attempt's span: its own spans join the trace.
			joined := 0
			for _, tp := range crm.parents() {
				parts := strings.Split(tp, "-")
				if len(parts) == 4 && parts[1] == traceID && deliverIDs[parts[2]] {
					joined++
				}
			}
			if joined != 2 {
				t.Errorf("receiver's traceparents = %q, want 2 in trace %s with an attempt span as parent", crm.parents(), traceID)
			}

			// Without a traceparent, a new trace starts at the request.
			harness.Eventually(t, 30*time.Second, func() error {
				if crm.delivered() < 2 {
					return fmt.Errorf("receiver has %d events delivered, want 2", crm.delivered())
				}
				return nil
			})
			var other string
			for _, tp := range crm.parents() {
				if parts := strings.Split(tp, "-"); len(parts) == 4 && parts[1] != traceID {
					other = parts[1]
				}
			}
			harness.Eventually(t, 30*time.Second, func() error {
				sp := named(col.trace(other), "POST")
				if other == "" || len(sp) != 1 {
					return fmt.Errorf("no request span in the second event's trace %q yet", other)
				}
				if len(sp[0].GetParentSpanId()) != 0 || attr(sp[0], "pipelined.event_id") != id2 {
					return fmt.Errorf("second request span: parent %x event %s, want a root span of event %s", sp[0].GetParentSpanId(), attr(sp[0], "pipelined.event_id"), id2)
				}
				return nil
			})
			if !strings.Contains(d.Log(), `"trace_id":"`+traceID+`"`) {
				t.Errorf("no log line carries trace_id %s", traceID)
			}
			col.mu.Lock()
			if len(col.names) == 0 || col.names[0] != "hooks-e2e" {
				t.Errorf("service.name of the exports = %v, want hooks-e2e", col.names)
			}
			col.mu.Unlock()
		})
	}
}

func TestTracingSampledAtZeroExportsNothing(t *testing.T) {
	col := &otlpReceiver{}
	endpoint := col.start(t, "grpc")
	crm := &flakyReceiver{seen: map[string]int{}, steady: true}
	crmSrv := httptest.NewServer(crm)
	defer crmSrv.Close()
	d, err := harness.StartWith(t, traceConfig(t, crmSrv.URL, fmt.Sprintf("otlp_endpoint = %q\nsample_ratio = 0.0", endpoint)), fastExport)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("zero-%d", i), "interested")); err != nil || code != 200 {
			t.Fatalf("POST = %d %v %v", code, ans, err)
		}
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if crm.delivered() < 5 {
			return fmt.Errorf("receiver has %d events delivered, want 5", crm.delivered())
		}
		return nil
	})
	// A clean stop exports whatever is pending: nothing may be.
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop within 30s of SIGTERM")
	}
	if n := col.count(); n != 0 {
		t.Errorf("collector got %d spans at sample_ratio = 0, want none", n)
	}
	// The context still travels, marked not sampled (flags 00).
	for _, tp := range crm.parents() {
		if !strings.HasSuffix(tp, "-00") {
			t.Errorf("receiver's traceparent %q, want one marked not sampled", tp)
		}
	}
}

func TestTracingUnreachableCollectorCostsNoWebhook(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	crm := &flakyReceiver{seen: map[string]int{}, steady: true}
	crmSrv := httptest.NewServer(crm)
	defer crmSrv.Close()
	d, err := harness.StartWith(t, traceConfig(t, crmSrv.URL, fmt.Sprintf("otlp_endpoint = %q", dead)), fastExport)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("dead-%d", i), "interested")); err != nil || code != 200 {
			t.Fatalf("POST %d with the collector down = %d %v %v", i, code, ans, err)
		}
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if crm.delivered() < n {
			return fmt.Errorf("receiver has %d events delivered, want %d", crm.delivered(), n)
		}
		if v, _ := strconv.ParseFloat(d.Metric(t, "pipelined_trace_spans_dropped_total"), 64); v <= 0 {
			return fmt.Errorf("pipelined_trace_spans_dropped_total = %v, want the spans not exported counted", v)
		}
		return nil
	})
}

// TestTracingRedeliveryAfterRestartJoinsTheTrace: the trace context is kept
// with the event in the log, so an attempt made by the next life of the
// daemon is in the trace the webhook arrived in.
func TestTracingRedeliveryAfterRestartJoinsTheTrace(t *testing.T) {
	col := &otlpReceiver{}
	endpoint := col.start(t, "grpc")
	crm := &flakyReceiver{seen: map[string]int{}, hold: true}
	crmSrv := httptest.NewServer(crm)
	defer crmSrv.Close()
	cfg := traceConfig(t, crmSrv.URL, fmt.Sprintf("otlp_endpoint = %q", endpoint))
	d, err := harness.StartWith(t, cfg, fastExport)
	if err != nil {
		t.Fatal(err)
	}
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	h := http.Header{"Traceparent": {"00-" + traceID + "-b7ad6b7169203331-01"}}
	if code, ans, err := harness.PostWith(harness.Client, d.URL+"/hooks/callkaro", "application/json", h, harness.CallEvent("restart-1", "interested")); err != nil || code != 200 {
		t.Fatalf("POST = %d %v %v", code, ans, err)
	}
	// Every attempt is answered 503 until the daemon is stopped.
	harness.Eventually(t, 30*time.Second, func() error {
		if len(crm.parents()) < 1 {
			return fmt.Errorf("receiver saw no attempt yet")
		}
		return nil
	})
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop within 30s of SIGTERM")
	}
	first := len(crm.parents())
	crm.mu.Lock()
	crm.hold = false
	crm.mu.Unlock()
	if _, err := harness.StartWith(t, cfg, fastExport); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if len(crm.parents()) <= first {
			return fmt.Errorf("receiver saw no attempt after the restart yet")
		}
		return nil
	})
	for _, tp := range crm.parents()[first:] {
		if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != traceID {
			t.Errorf("attempt after the restart sent traceparent %q, want one in trace %s", tp, traceID)
		}
	}
	harness.Eventually(t, 30*time.Second, func() error {
		ok := 0
		for _, s := range named(col.trace(traceID), "deliver crm") {
			if attr(s, "pipelined.outcome") == "delivered" {
				ok++
			}
		}
		if ok != 1 {
			return fmt.Errorf("trace %s has %d delivered attempt spans, want 1 (from the second life)", traceID, ok)
		}
		return nil
	})
}
