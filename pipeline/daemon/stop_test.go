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
	"github.com/pipelined/pipelined/sdk/protocol"
)

// The test binary doubles as a sink plugin, as in pluginhost's tests: the
// host runs os.Args[0] with go-plugin's magic cookie set, and the sink's
// config passes pluginVar through (the *_env mechanism).
const pluginVar = "PIPELINED_DAEMON_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(protocol.Handshake.MagicCookieKey) == protocol.Handshake.MagicCookieValue {
		switch os.Getenv(pluginVar) {
		case "deliver":
			sdk.Serve(deliverSink{})
			os.Exit(0)
		case "rendezvous": // start_test.go
			sdk.Serve(rendezvousSink{})
			os.Exit(0)
		case "reject": // start_test.go
			sdk.Serve(rejectSink{})
			os.Exit(0)
		case "slow": // stopping_test.go
			sdk.Serve(&slowSink{})
			os.Exit(0)
		}
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
	spec := pluginhost.Spec{Sink: "s", Command: os.Args[0], Config: raw}
	sr := s.sinkRun(spec, s.supervisor(spec), config.Delivery{BatchMax: 10, MaxAttempts: 3}, nil)
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
	if sr.disp.Load() != nil {
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

// TestRunShutdownIsBounded runs a daemon on a log that refuses every
// settlement and checks that Run returns within [server] shutdown_timeout
// (plus the plugin's stop) of its ctx ending, with a delivered batch whose
// outcome the log would not record.
func TestRunShutdownIsBounded(t *testing.T) {
	const shutdownTimeout = 500 * time.Millisecond
	// Stopping the plugin and closing the log come after shutdown_timeout;
	// a Run that waited for the refusing log would never return.
	const slack = 5 * time.Second

	cfg := pluginConfig(t, fmt.Sprintf("shutdown_timeout = %q", shutdownTimeout.String()))
	l := &refusingLog{Log: memlog.New()}
	r := startOnLog(t, cfg, l, &Options{})

	if _, err := l.Append(context.Background(), []pipeline.Entry{{
		Event:   pipeline.Event{ID: "ev-1", Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "s", Route: "all"}},
	}}); err != nil {
		t.Fatalf("Append = %v", err)
	}
	// The premise: the plugin delivered the event and the dispatcher is
	// retrying the settlement the log refuses.
	waitUntil(t, "two refused settlements", func() bool { return l.refused() >= 2 })

	t0 := time.Now()
	r.stop()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("Run() = %v, want nil", r.err)
		}
		if took := time.Since(t0); took > shutdownTimeout+slack {
			t.Errorf("Run returned %v after its ctx ended, want at most shutdown_timeout %v + %v", took, shutdownTimeout, slack)
		}
	case <-time.After(shutdownTimeout + 30*time.Second):
		t.Fatalf("Run did not return within %v of its ctx ending", shutdownTimeout+30*time.Second)
	}
}

// noNotifier is a Notifier that tells no one.
type noNotifier struct{}

func (noNotifier) Ready(string) error                { return nil }
func (noNotifier) Reloading() error                  { return nil }
func (noNotifier) Stopping() error                   { return nil }
func (noNotifier) Status(string) error               { return nil }
func (noNotifier) Watchdog() error                   { return nil }
func (noNotifier) ExtendTimeout(time.Duration) error { return nil }
func (noNotifier) WatchdogInterval() time.Duration   { return 0 }

// pluginConfig returns a configuration of one source and one sink whose
// plugin is this test binary serving deliverSink, with server (lines of
// [server]) added; both listeners on free loopback ports, the log in a
// temporary directory.
func pluginConfig(t *testing.T, server string) *config.Config {
	t.Helper()
	t.Setenv(pluginVar, "deliver")
	return sinksConfig(t, server, t.TempDir(), deliverSinkTOML())
}

// deliverSinkTOML is a sink "s" whose plugin is this test binary (serving
// what pluginVar says), and a route of every event to it.
func deliverSinkTOML() string {
	return fmt.Sprintf(`
[[sink]]
name = "s"
command = %q
config = { plugin_env = %q }

[[route]]
name = "all"
when = "true"
to = ["s"]
`, os.Args[0], pluginVar)
}

// sinksConfig parses a configuration of one source, "src" at /hooks/src,
// with server (lines of [server]) added, both listeners on free loopback
// ports, the log in logDir, and then rest: its sinks and routes.
func sinksConfig(t *testing.T, server, logDir, rest string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("daemon_test.toml", []byte(sinksTOML(server, logDir, rest)))
	if err != nil {
		t.Fatalf("config.Parse = %v", err)
	}
	return cfg
}

// sinksTOML is the text of [sinksConfig].
func sinksTOML(server, logDir, rest string) string {
	return daemonTOML(server, "", logDir, rest)
}

// daemonTOML is sinksTOML with admin (lines of [admin]) added too.
func daemonTOML(server, admin, logDir, rest string) string {
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
%s

[admin]
listen = "127.0.0.1:0"
%s

[log]
dir = %q

[[source]]
name = "src"
path = "/hooks/src"
auth = { type = "none" }
%s`, server, admin, logDir, rest)
}
