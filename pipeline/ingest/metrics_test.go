package ingest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// TestMetrics checks that requests move the counters of their source and
// outcome, and that routes and rule errors are counted by route.
func TestMetrics(t *testing.T) {
	f := newFixture(t, nil)
	reg := prometheus.NewRegistry()
	cfg := testConfig(t)
	cfg.Metrics = metrics.New(reg)
	f.h.Swap(cfg)

	for _, tt := range []struct {
		r    request
		want int
	}{
		{request{contentType: "application/json", body: callKaro(t)}, http.StatusOK},
		{request{contentType: "application/json", body: callKaro(t)}, http.StatusOK}, // duplicate
		{request{contentType: "application/json", body: []byte(`{"a":`)}, http.StatusBadRequest},
		{request{contentType: "text/plain", body: []byte(`{}`)}, http.StatusUnsupportedMediaType},
		{request{method: http.MethodGet}, http.StatusMethodNotAllowed},
		{request{path: "/no/such/path/" + strings.Repeat("x", 10), contentType: "application/json", body: []byte(`{}`)}, http.StatusNotFound},
	} {
		if r := f.do(t, tt.r); r.code != tt.want {
			t.Fatalf("%s %s = %d %s, want %d", tt.r.method, tt.r.path, r.code, r.body, tt.want)
		}
	}

	// Every outcome of a known source and every rule's errors are there
	// from the start, at zero until they happen (Swap's InitSource and
	// InitRuleError): an increase() sees the first.
	want := `
# HELP pipelined_ingest_requests_total Webhook requests answered, by source and outcome (accepted, duplicate, or the class of the rejection). Requests to an unknown path count under source="".
# TYPE pipelined_ingest_requests_total counter
pipelined_ingest_requests_total{outcome="accepted",source="callkaro"} 1
pipelined_ingest_requests_total{outcome="bad_json",source="callkaro"} 1
pipelined_ingest_requests_total{outcome="canceled",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="duplicate",source="callkaro"} 1
pipelined_ingest_requests_total{outcome="forbidden",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="ignored",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="method_not_allowed",source="callkaro"} 1
pipelined_ingest_requests_total{outcome="not_found",source=""} 1
pipelined_ingest_requests_total{outcome="rate_limited",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="read_error",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="too_large",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="unauthorized",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="unavailable",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="unprocessable",source="callkaro"} 0
pipelined_ingest_requests_total{outcome="unsupported_media_type",source="callkaro"} 1
# HELP pipelined_route_matches_total Events appended with a target of the route (its when expression selected them), by route; duplicates are not counted.
# TYPE pipelined_route_matches_total counter
pipelined_route_matches_total{route="everything"} 1
pipelined_route_matches_total{route="leads"} 1
# HELP pipelined_rule_errors_total Rule expressions that failed on an event, by route and expression: a route's when or transform, or a source's accept, ignore or schema (route is then the source's name). A failed transform sends the event to the dead-letter queue of the route's sinks.
# TYPE pipelined_rule_errors_total counter
pipelined_rule_errors_total{expr="transform",route="leads"} 0
pipelined_rule_errors_total{expr="when",route="broken"} 2
pipelined_rule_errors_total{expr="when",route="everything"} 0
pipelined_rule_errors_total{expr="when",route="leads"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pipelined_ingest_requests_total", "pipelined_route_matches_total", "pipelined_rule_errors_total"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pipelined_ingest_duration_seconds" {
			if n := mf.GetMetric()[0].GetHistogram().GetSampleCount(); n != 2 {
				t.Errorf("pipelined_ingest_duration_seconds count = %d, want 2 (the 2xx answers)", n)
			}
		}
	}
}

// TestRuleErrorCountersStartAtZero: a source's accept, ignore and schema
// have their rule_errors_total series from the start, at zero, as a
// route's when and transform do (TestMetrics), so that an alert's
// increase() sees the first failure, after a restart too.
func TestRuleErrorCountersStartAtZero(t *testing.T) {
	src := callKaroSource(t) // accept and schema
	ignore, err := rules.CompileBool(`body.event == "ping"`)
	if err != nil {
		t.Fatal(err)
	}
	src.Ignore = ignore
	reg := prometheus.NewRegistry()
	ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20, Metrics: metrics.New(reg)}, &recordingAppender{}, nil)
	want := `
# HELP pipelined_rule_errors_total Rule expressions that failed on an event, by route and expression: a route's when or transform, or a source's accept, ignore or schema (route is then the source's name). A failed transform sends the event to the dead-letter queue of the route's sinks.
# TYPE pipelined_rule_errors_total counter
pipelined_rule_errors_total{expr="accept",route="callkaro"} 0
pipelined_rule_errors_total{expr="ignore",route="callkaro"} 0
pipelined_rule_errors_total{expr="schema",route="callkaro"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pipelined_rule_errors_total"); err != nil {
		t.Error(err)
	}
}
