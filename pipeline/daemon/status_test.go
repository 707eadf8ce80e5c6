package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
)

// rebuildingLog is a log in the state Badger's is in after a restart with
// a backlog: it rebuilds its queues in the background, and until that is
// done its queues' Stats and Oldest wait (here, for as long as the caller
// lets them).
type rebuildingLog struct{ pipeline.Log }

func (rebuildingLog) QueuesRebuilding() (pipeline.QueueRebuild, bool) {
	return pipeline.QueueRebuild{Read: 7, Total: 30}, true
}

func (l rebuildingLog) Queue(sink string) pipeline.Queue { return rebuildingQueue{l.Log.Queue(sink)} }

type rebuildingQueue struct{ pipeline.Queue }

func (rebuildingQueue) Stats(ctx context.Context) (pipeline.QueueStats, error) {
	<-ctx.Done()
	return pipeline.QueueStats{}, ctx.Err()
}

func (rebuildingQueue) Oldest(ctx context.Context) (time.Time, error) {
	<-ctx.Done()
	return time.Time{}, ctx.Err()
}

// TestStatusDuringTheQueuesRebuild: while the log rebuilds its queues
// after a start, GET /v1/sinks and a /metrics scrape answer at once and say
// so, instead of waiting out their timeouts for counts that are not known
// yet (and, for the scrape, dropping them with an error).
func TestStatusDuringTheQueuesRebuild(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := &Daemon{metrics: metrics.New(reg)}
	d.sinks = sinks{log: slog.New(slog.DiscardHandler), db: rebuildingLog{memlog.New()}, metrics: d.metrics}
	spec := pluginhost.Spec{Sink: "archive", Command: os.Args[0]}
	delivery := config.Delivery{BatchMax: 10, MaxAttempts: 3}
	gone := d.sinks.sinkRun(pluginhost.Spec{Sink: "gone"}, nil, delivery, nil) // removed by a reload: no plugin
	d.sinks.install([]*sinkRun{d.sinks.sinkRun(spec, d.sinks.supervisor(spec), delivery, nil), gone})
	d.metrics.SetQueueSource(d.queueSamples)

	const token = "status-test-token"
	srv := httptest.NewServer(admin.Handler(admin.Options{Sinks: d.sinkStatus, Log: d.sinks.db, Token: []byte(token)}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/sinks", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var list admin.SinkList
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	var loose struct{ Sinks []map[string]any }
	if err := json.Unmarshal(raw, &loose); err != nil || len(loose.Sinks) == 0 {
		t.Fatalf("GET /v1/sinks = %s, %v", raw, err)
	}
	for _, k := range []string{"ready", "retrying", "dead"} {
		if v, ok := loose.Sinks[0][k]; ok {
			t.Errorf("GET /v1/sinks during the rebuild has %s = %v: a client that does not know \"rebuilding\" would take an unknown count for a real one", k, v)
		}
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("GET /v1/sinks during the rebuild took %v: it waited for the counts", took)
	}
	if resp.StatusCode != http.StatusOK || len(list.Sinks) != 2 || !list.Sinks[0].Rebuilding || list.Sinks[0].Name != "archive" ||
		!list.Sinks[1].Rebuilding || list.Sinks[1].Plugin != "removed" {
		t.Errorf("GET /v1/sinks during the rebuild = %d %+v; want 200, archive and the removed sink gone (whose queue may hold events), rebuilding", resp.StatusCode, list.Sinks)
	}
	if r := list.QueuesRebuild; r == nil || *r != (admin.QueuesRebuild{Read: 7, Total: 30}) {
		t.Errorf("queues_rebuild = %+v, want 7 of 30 read", r)
	}

	t0 = time.Now()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("scrape during the rebuild: %v", err)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("a scrape during the rebuild took %v: it waited for the counts", took)
	}
	rebuilding := -1.0
	for _, mf := range mfs {
		switch mf.GetName() {
		case "pipelined_queue_depth", "pipelined_dead_letters", "pipelined_queue_oldest_age_seconds":
			t.Errorf("scrape during the rebuild has %s, whose counts are not known yet", mf.GetName())
		case "pipelined_queues_rebuilding":
			rebuilding = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if rebuilding != 1 {
		t.Errorf("pipelined_queues_rebuilding = %v, want 1 (-1: absent)", rebuilding)
	}
}

// unansweringLog is a log whose queues cannot be counted: a JetStream
// stream without a quorum answers every consumer request with an error.
type unansweringLog struct{ pipeline.Log }

func (l unansweringLog) Queue(sink string) pipeline.Queue { return unansweringQueue{l.Log.Queue(sink)} }

type unansweringQueue struct{ pipeline.Queue }

func (unansweringQueue) Stats(context.Context) (pipeline.QueueStats, error) {
	return pipeline.QueueStats{}, errors.New("jetstream: consumer: JetStream system temporarily unavailable")
}

// TestStatusWhenTheQueuesCannotBeCounted: when the log cannot count a
// sink's queue, GET /v1/sinks still answers 200 with what is known of
// every sink (its plugin, its breaker) and says why its counts are not,
// leaving them out rather than failing the whole answer.
func TestStatusWhenTheQueuesCannotBeCounted(t *testing.T) {
	d := &Daemon{metrics: metrics.New(prometheus.NewRegistry())}
	d.sinks = sinks{log: slog.New(slog.DiscardHandler), db: unansweringLog{memlog.New()}, metrics: d.metrics}
	spec := pluginhost.Spec{Sink: "archive", Command: os.Args[0]}
	d.sinks.install([]*sinkRun{d.sinks.sinkRun(spec, d.sinks.supervisor(spec), config.Delivery{BatchMax: 10, MaxAttempts: 3}, nil)})
	const token = "status-test-token"
	srv := httptest.NewServer(admin.Handler(admin.Options{Sinks: d.sinkStatus, Log: d.sinks.db, Token: []byte(token)}))
	t.Cleanup(srv.Close)
	req, err := http.NewRequest("GET", srv.URL+"/v1/sinks", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var loose struct{ Sinks []map[string]any }
	if err := json.Unmarshal(raw, &loose); err != nil || resp.StatusCode != http.StatusOK || len(loose.Sinks) != 1 {
		t.Fatalf("GET /v1/sinks = %d %s (%v), want 200 with the sink", resp.StatusCode, raw, err)
	}
	s := loose.Sinks[0]
	if s["name"] != "archive" || s["plugin"] == nil || s["queue_error"] != "jetstream: consumer: JetStream system temporarily unavailable" {
		t.Errorf("sink = %v, want archive with its plugin state and the queue's error", s)
	}
	for _, k := range []string{"ready", "retrying", "dead"} {
		if v, ok := s[k]; ok {
			t.Errorf("sink has %s = %v, a count that is not known", k, v)
		}
	}
}
