package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newMetrics(t testing.TB) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return New(reg), reg
}

// TestNilIsSafe checks that every method of a nil *Metrics does nothing.
func TestNilIsSafe(t *testing.T) {
	var m *Metrics
	m.IngestRequest("s", OutcomeAccepted, time.Millisecond)
	m.RouteMatched("r")
	m.RuleError("r", "when")
	m.DedupKeyError("s")
	m.WriterCommit(3, time.Millisecond, nil)
	m.Delivery("k", 1, 1, 1, 1, time.Millisecond, errors.New("x"))
	m.PluginRestart("k")
	m.Reload(nil)
	m.InitSink("k")
	m.SinkBreaker("k", true)
	m.SetQueueSource(nil)
	m.SetLogSize(nil)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Handler answered %d, want 404", rec.Code)
	}
}

func TestCounters(t *testing.T) {
	m, _ := newMetrics(t)
	m.IngestRequest("callkaro", OutcomeAccepted, 2*time.Millisecond)
	m.IngestRequest("callkaro", OutcomeAccepted, 3*time.Millisecond)
	m.IngestRequest("callkaro", OutcomeDuplicate, time.Millisecond)
	m.IngestRequest("callkaro", OutcomeUnauthorized, time.Millisecond)
	m.IngestRequest("", OutcomeNotFound, time.Millisecond)
	m.RouteMatched("leads")
	m.RuleError("leads", "transform")
	m.DedupKeyError("callkaro")
	m.WriterCommit(7, time.Millisecond, nil)
	m.WriterCommit(2, time.Millisecond, errors.New("disk full"))
	m.Delivery("slack", 3, 2, 5, 1, 10*time.Millisecond, nil)
	m.Delivery("slack", 0, 4, 0, 0, time.Second, errors.New("plugin exited"))
	m.PluginRestart("slack")
	m.Reload(nil)
	m.Reload(errors.New("bad config"))

	for _, tt := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"accepted", m.ingestRequests.WithLabelValues("callkaro", OutcomeAccepted), 2},
		{"duplicate", m.ingestRequests.WithLabelValues("callkaro", OutcomeDuplicate), 1},
		{"unauthorized", m.ingestRequests.WithLabelValues("callkaro", OutcomeUnauthorized), 1},
		{"not found", m.ingestRequests.WithLabelValues("", OutcomeNotFound), 1},
		{"route", m.routeMatches.WithLabelValues("leads"), 1},
		{"rule error", m.ruleErrors.WithLabelValues("leads", "transform"), 1},
		{"dedup error", m.dedupErrors.WithLabelValues("callkaro"), 1},
		{"writer failures", m.writerFailure, 1},
		{"delivered", m.deliveries.WithLabelValues("slack", "delivered"), 3},
		{"retried", m.deliveries.WithLabelValues("slack", "retried"), 6},
		{"not attempted", m.deliveries.WithLabelValues("slack", "not_attempted"), 5},
		{"dead", m.deliveries.WithLabelValues("slack", "dead"), 1},
		{"call failures", m.deliveryFailures.WithLabelValues("slack"), 1},
		{"restarts", m.pluginRestarts.WithLabelValues("slack"), 1},
		{"reloads ok", m.reloads.WithLabelValues("ok"), 1},
		{"reloads failed", m.reloads.WithLabelValues("failed"), 1},
		{"last reload", m.reloadOK, 0},
	} {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(m.ingestRequests); n != 4 {
		t.Errorf("pipelined_ingest_requests_total series = %d, want 4", n)
	}
}

func TestHistograms(t *testing.T) {
	m, reg := newMetrics(t)
	m.IngestRequest("callkaro", OutcomeAccepted, 2*time.Millisecond)
	m.IngestRequest("callkaro", OutcomeBadJSON, time.Millisecond) // not observed
	m.WriterCommit(7, 300*time.Microsecond, nil)
	m.Delivery("slack", 3, 0, 0, 0, 10*time.Millisecond, nil)
	for name, want := range map[string]int{
		"pipelined_ingest_duration_seconds":        1,
		"pipelined_writer_batch_size":              1,
		"pipelined_writer_commit_duration_seconds": 1,
		"pipelined_delivery_duration_seconds":      1,
		"pipelined_delivery_batch_size":            1,
	} {
		if got := sampleCount(t, reg, name); got != want {
			t.Errorf("%s sample count = %d, want %d", name, got, want)
		}
	}
}

func sampleCount(t testing.TB, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			n += int(m.GetHistogram().GetSampleCount())
		}
	}
	return n
}

func TestStateAtScrapeTime(t *testing.T) {
	m, reg := newMetrics(t)
	calls := 0
	m.SetQueueSource(func(ctx context.Context) ([]QueueSample, error) {
		calls++
		return []QueueSample{
			{Sink: "slack", Ready: 5, Retrying: 2, Dead: 1, Oldest: time.Now().Add(-time.Minute)},
			{Sink: "archive"},
		}, nil
	})
	m.SetLogSize(func() map[string]int64 { return map[string]int64{"lsm": 1 << 20, "vlog": 64 << 20, "wal": 2 << 20} })
	if calls != 0 {
		t.Errorf("queue source called %d times before a scrape, want 0", calls)
	}
	want := `
# HELP pipelined_dead_letters Entries in a sink's dead-letter queue, by sink.
# TYPE pipelined_dead_letters gauge
pipelined_dead_letters{sink="archive"} 0
pipelined_dead_letters{sink="slack"} 1
# HELP pipelined_log_size_bytes Size of the event log on disk, by kind, as the log's backend names them (the badger backend: lsm, vlog, wal; see its documentation). Not reported for a backend that keeps no local files.
# TYPE pipelined_log_size_bytes gauge
pipelined_log_size_bytes{kind="lsm"} 1.048576e+06
pipelined_log_size_bytes{kind="vlog"} 6.7108864e+07
pipelined_log_size_bytes{kind="wal"} 2.097152e+06
# HELP pipelined_queue_depth Entries waiting in a sink's queue, by sink and state: ready (new or being delivered) or retrying (waiting for their retry time).
# TYPE pipelined_queue_depth gauge
pipelined_queue_depth{sink="archive",state="ready"} 0
pipelined_queue_depth{sink="archive",state="retrying"} 0
pipelined_queue_depth{sink="slack",state="ready"} 5
pipelined_queue_depth{sink="slack",state="retrying"} 2
# HELP pipelined_queues_rebuilding 1 while the event log rebuilds the sinks' queues after the start (a backlog of millions takes seconds; delivery starts after it), when the queue metrics are left out; else 0.
# TYPE pipelined_queues_rebuilding gauge
pipelined_queues_rebuilding 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pipelined_dead_letters", "pipelined_log_size_bytes", "pipelined_queue_depth", "pipelined_queues_rebuilding"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pipelined_queue_oldest_age_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			age := s.GetGauge().GetValue()
			switch sink := s.GetLabel()[0].GetValue(); sink {
			case "slack":
				if age < 59 || age > 120 {
					t.Errorf("oldest age of slack = %v, want about 60", age)
				}
			case "archive":
				if age != 0 {
					t.Errorf("oldest age of empty archive = %v, want 0", age)
				}
			}
		}
	}
	if n := testutil.CollectAndCount(m.state, "pipelined_queue_depth"); n != 4 {
		t.Errorf("pipelined_queue_depth series = %d, want 4", n)
	}
}

// TestQueuesRebuilding: while the log rebuilds its queues after the start,
// a scrape leaves the queue metrics out (their counts are not known yet)
// and says so in pipelined_queues_rebuilding.
func TestQueuesRebuilding(t *testing.T) {
	m, reg := newMetrics(t)
	m.SetQueueSource(func(ctx context.Context) ([]QueueSample, error) {
		return []QueueSample{{Sink: "slack", Rebuilding: true}, {Sink: "archive", Rebuilding: true}}, nil
	})
	want := `
# HELP pipelined_queues_rebuilding 1 while the event log rebuilds the sinks' queues after the start (a backlog of millions takes seconds; delivery starts after it), when the queue metrics are left out; else 0.
# TYPE pipelined_queues_rebuilding gauge
pipelined_queues_rebuilding 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pipelined_queues_rebuilding"); err != nil {
		t.Error(err)
	}
	for _, name := range []string{"pipelined_queue_depth", "pipelined_dead_letters", "pipelined_queue_oldest_age_seconds"} {
		if n := testutil.CollectAndCount(m.state, name); n != 0 {
			t.Errorf("%s series during the rebuild = %d, want 0: its counts are not known yet", name, n)
		}
	}
}

// TestQueueSourceError checks that a failing queue source does not take
// the other metrics down with it.
func TestQueueSourceError(t *testing.T) {
	m, _ := newMetrics(t)
	m.SetQueueSource(func(ctx context.Context) ([]QueueSample, error) {
		return nil, errors.New("log closed")
	})
	m.IngestRequest("s", OutcomeAccepted, time.Millisecond)
	resp, b := scrape(t, m)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics = %d, want 200", resp.StatusCode)
	}
	if !strings.Contains(string(b), `pipelined_ingest_requests_total{outcome="accepted",source="s"} 1`) {
		t.Errorf("GET /metrics body lacks the ingest counter:\n%s", b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain (OpenMetrics off)", ct)
	}
}

// scrape GETs m's handler over HTTP and returns the answer and its body.
func scrape(t *testing.T, m *Metrics) (*http.Response, []byte) {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestQueueSourcePartly: when some sinks' queues cannot be counted (a
// stream without a quorum), the others are still reported.
func TestQueueSourcePartly(t *testing.T) {
	m, _ := newMetrics(t)
	m.SetQueueSource(func(ctx context.Context) ([]QueueSample, error) {
		return []QueueSample{{Sink: "archive", Ready: 7}}, errors.New("sink db: jetstream: no quorum")
	})
	resp, b := scrape(t, m)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `pipelined_queue_depth{sink="archive",state="ready"} 7`) {
		t.Errorf("GET /metrics = %d, want 200 with archive's queue:\n%s", resp.StatusCode, b)
	}
	if strings.Contains(string(b), `sink="db"`) {
		t.Errorf("GET /metrics reports db, whose queue was not counted:\n%s", b)
	}
}

// TestLint runs promlint over every metric, with the standard Go and
// process collectors next to them as the daemon registers them.
func TestLint(t *testing.T) {
	m, reg := newMetrics(t)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Make every vector hold a series, so that lint sees them all.
	m.IngestRequest("s", OutcomeAccepted, time.Millisecond)
	m.RouteMatched("r")
	m.RuleError("r", "when")
	m.DedupKeyError("s")
	m.WriterCommit(1, time.Millisecond, nil)
	m.Delivery("k", 1, 0, 0, 0, time.Millisecond, errors.New("x"))
	m.PluginRestart("k")
	m.SetQueueSource(func(ctx context.Context) ([]QueueSample, error) {
		return []QueueSample{{Sink: "k"}}, nil
	})
	m.SetLogSize(func() map[string]int64 { return map[string]int64{"lsm": 1, "vlog": 2, "wal": 3} })
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "pipelined_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s lacks the pipelined_ prefix", name)
		}
	}
}

// TestTwoNewOnOneRegistryPanics checks the programmer error is loud.
func TestTwoNewOnOneRegistryPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	defer func() {
		if recover() == nil {
			t.Error("second New on one registry did not panic")
		}
	}()
	New(reg)
}

// TestSinkBreaker checks pipelined_sink_breaker_open{sink} follows the
// breaker: 0 from InitSink, 1 while open, 0 once closed.
func TestSinkBreaker(t *testing.T) {
	m, _ := newMetrics(t)
	m.InitSink("crm")
	steps := []struct {
		name string
		set  func()
		want float64
	}{
		{"initial", func() {}, 0},
		{"opened", func() { m.SinkBreaker("crm", true) }, 1},
		{"closed", func() { m.SinkBreaker("crm", false) }, 0},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.set()
			if got := testutil.ToFloat64(m.breakerOpen.WithLabelValues("crm")); got != st.want {
				t.Errorf("pipelined_sink_breaker_open{sink=\"crm\"} = %v, want %v", got, st.want)
			}
		})
	}
}
