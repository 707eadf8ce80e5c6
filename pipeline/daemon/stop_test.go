package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
	"github.com/pipelined/pipelined/sdk"
)

// The test binary doubles as a sink plugin, as in pluginhost's tests: the
// host runs os.Args[0] with go-plugin's magic cookie set, and the sink's
// config passes pluginVar through (the *_env mechanism).
const pluginVar = "PIPELINED_DAEMON_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(pluginVar) == "deliver" && os.Getenv(sdk.Handshake.MagicCookieKey) == sdk.Handshake.MagicCookieValue {
		sdk.Serve(deliverSink{})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// deliverSink delivers every event.
type deliverSink struct{}

func (deliverSink) Configure(context.Context, json.RawMessage) error { return nil }

func (deliverSink) Deliver(_ context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	return nil, nil // nil results: all delivered
}

// refusingLog is a memlog whose queues refuse every settlement, as a log on
// a full disk does; it counts the refusals.
type refusingLog struct {
	*memlog.Log

	mu       sync.Mutex
	refusals int
}

func (l *refusingLog) Queue(sink string) pipeline.Queue { return &refusingQueue{l.Log.Queue(sink), l} }

func (l *refusingLog) refused() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refusals
}

type refusingQueue struct {
	pipeline.Queue
	l *refusingLog
}

func (q *refusingQueue) Settle(context.Context, []pipeline.Settlement) error {
	q.l.mu.Lock()
	defer q.l.mu.Unlock()
	q.l.refusals++
	return errors.New("write event log: no space left on device")
}

// TestStopDispatchIsBounded checks that stopping the dispatchers ends when
// the shutdown context does, even while the log refuses to record the
// outcome of a batch the plugin delivered: the entries stay unsettled and
// are delivered again after a restart.
func TestStopDispatchIsBounded(t *testing.T) {
	const deadline = 300 * time.Millisecond
	const slack = 2 * time.Second // the dispatcher retries a refusing log for up to 10 s at a time

	t.Setenv(pluginVar, "deliver")
	raw, err := json.Marshal(map[string]string{"plugin_env": pluginVar})
	if err != nil {
		t.Fatal(err)
	}
	l := &refusingLog{Log: memlog.New()}
	s := &sinks{log: slog.New(slog.DiscardHandler), db: l, metrics: metrics.New(prometheus.NewRegistry())}
	sr := s.newSinkRun(pluginhost.Spec{Sink: "s", Command: os.Args[0], Config: raw}, config.Delivery{BatchMax: 10, MaxAttempts: 3})
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sr.sup.Start(sctx); err != nil {
		t.Fatalf("start the helper plugin: %v", err)
	}
	t.Cleanup(s.stopAll)
	s.install([]*sinkRun{sr})
	sr.startDispatch()

	var entries []pipeline.Entry
	for i := range 3 {
		entries = append(entries, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("ev-%d", i), Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
		})
	}
	if _, err := l.Append(context.Background(), entries); err != nil {
		t.Fatalf("Append = %v", err)
	}
	// The premise: the plugin delivered the batch, and the dispatcher is
	// retrying the settlement the log keeps refusing.
	waitUntil(t, "two refused settlements", func() bool { return l.refused() >= 2 })

	ctx, cancelStop := context.WithTimeout(context.Background(), deadline)
	defer cancelStop()
	t0 := time.Now()
	s.stopDispatch(ctx)
	if took := time.Since(t0); took > deadline+slack {
		t.Errorf("stopDispatch took %v, want at most %v past its %v deadline", took, slack, deadline)
	}
	if sr.disp != nil {
		t.Errorf("sink still has a dispatcher after stopDispatch")
	}
	st, err := l.Log.Queue("s").Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats = %v", err)
	}
	if want := (pipeline.QueueStats{Ready: 3}); st != want {
		t.Errorf("Stats() after stopDispatch = %+v, want %+v (nothing acked)", st, want)
	}
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
