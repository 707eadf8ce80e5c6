package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
)

// rendezvous is how long a side of TestPluginsStartWhileTheLogOpens waits
// for the others before it gives up.
const rendezvous = 5 * time.Second

// rendezvousSink is a helper plugin whose Configure marks it started (a
// file named for its sink in dir) and then waits until every sink of
// peers is marked too: it can be configured only while the others start.
type rendezvousSink struct{ deliverSink }

func (rendezvousSink) Configure(_ context.Context, raw json.RawMessage) error {
	var c struct {
		Dir   string   `json:"dir"`
		Name  string   `json:"name"`
		Peers []string `json:"peers"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, c.Name), nil, 0o600); err != nil {
		return err
	}
	if !allMarked(c.Dir, c.Peers) {
		return fmt.Errorf("sink %s: started alone: %v did not start within %v of it", c.Name, c.Peers, rendezvous)
	}
	return nil
}

// allMarked waits up to rendezvous for a file of each name in dir.
func allMarked(dir string, names []string) bool {
	deadline := time.Now().Add(rendezvous)
	for {
		n := 0
		for _, name := range names {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				n++
			}
		}
		if n == len(names) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rendezvousConfig is a config of two sinks, a and b, whose plugins are
// rendezvousSinks marking dir with <sink><gen>: each can be configured only
// while the other starts.
func rendezvousConfig(t *testing.T, dir, logDir, gen string) *config.Config {
	t.Helper()
	sink := func(name, peer string) string {
		return fmt.Sprintf(`
[[sink]]
name = %q
command = %q
config = { plugin_env = %q, dir = %q, name = %q, peers = [%q] }
`, name, os.Args[0], pluginVar, dir, name+gen, peer+gen)
	}
	return sinksConfig(t, "", logDir, sink("a", "b")+sink("b", "a")+`
[[route]]
name = "all"
when = "true"
to = ["a", "b"]
`)
}

// TestPluginsStartWhileTheLogOpens checks that a restart waits for the
// slowest of the log's open and the plugins' starts, not for their sum:
// two real plugin processes that can each be configured only while the
// other is starting, and a log whose open ends only once both plugins
// have started. Started one after another, or after the open, each side
// gives up and Run fails. A reload that changes both sinks starts their
// new plugins at once too.
func TestPluginsStartWhileTheLogOpens(t *testing.T) {
	t.Setenv(pluginVar, "rendezvous")
	dir, logDir := t.TempDir(), t.TempDir()
	ready := make(chan struct{})
	d := New(rendezvousConfig(t, dir, logDir, ""), &Options{
		OnReady:  func(_, _ net.Addr) { close(ready) },
		Notifier: noNotifier{},
		Load:     func() (*config.Config, error) { return rendezvousConfig(t, dir, logDir, "-reloaded"), nil },
	})
	d.openLog = func(context.Context, config.Log, *slog.Logger, *atomic.Int64) (pipeline.Log, func() map[string]int64, error) {
		if !allMarked(dir, []string{"a", "b"}) {
			return nil, nil, errors.New("the log's open ended before both plugins started")
		}
		return memlog.New(), nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-ready:
		defer func() { cancel(); <-done }()
	case err := <-done:
		cancel()
		t.Fatalf("Run() = %v before it was ready: the plugins and the log's open did not overlap", err)
	case <-time.After(4 * rendezvous):
		defer func() { cancel(); <-done }()
		t.Fatal("daemon not ready within 20s")
	}
	running := func(when string) {
		t.Helper()
		for _, sr := range d.sinks.list() {
			if state, pid, _ := sr.sup.State(); pid <= 0 {
				t.Errorf("%s: sink %s: plugin %s with no process, want it running", when, sr.name, state)
			}
		}
	}
	running("after the start")
	if err := d.Reload(context.Background()); err != nil {
		t.Fatalf("Reload() = %v, want the two changed sinks' new plugins started together", err)
	}
	running("after the reload")
}

// rejectSink is a helper plugin that rejects its config when it sets
// reject.
type rejectSink struct{ deliverSink }

func (rejectSink) Configure(_ context.Context, raw json.RawMessage) error {
	var c struct {
		Reject bool `json:"reject"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	if c.Reject {
		return errors.New("no such table: calls")
	}
	return nil
}

// TestStartErrorsNameTheSinkOnce: a sink whose plugin rejects its config
// fails the start, and a reload, with an error that names the sink once.
func TestStartErrorsNameTheSinkOnce(t *testing.T) {
	t.Setenv(pluginVar, "reject")
	logDir := t.TempDir()
	cfg := func(reject bool) *config.Config {
		return sinksConfig(t, "", logDir, fmt.Sprintf(`
[[sink]]
name = "db"
command = %q
config = { plugin_env = %q, reject = %v }
`, os.Args[0], pluginVar, reject))
	}
	once := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s = nil, want the plugin's refusal", what)
		}
		if n := strings.Count(err.Error(), `sink "db"`); n != 1 || !strings.Contains(err.Error(), "no such table: calls") {
			t.Errorf("%s = %q; want the refusal, naming the sink once (%d times)", what, err, n)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	once("Run with a rejected config", New(cfg(true), &Options{Notifier: noNotifier{}}).Run(ctx))

	ready := make(chan struct{})
	logs := &testlog.Buffer{}
	d := New(cfg(false), &Options{
		OnReady:  func(_, _ net.Addr) { close(ready) },
		Notifier: noNotifier{},
		Load:     func() (*config.Config, error) { return cfg(true), nil },
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
	})
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(rctx) }()
	defer func() { stop(); <-done }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run() = %v before it was ready", err)
	case <-ctx.Done():
		t.Fatal("daemon not ready within 30s")
	}
	once("Reload to a rejected config", d.Reload(ctx))
	if l := logs.Lines(t, "plugin failed to start; trying again after a delay"); len(l) > 0 {
		t.Errorf("a refused reload logged %v: nothing is tried again, the reload is refused", l)
	}
}

// TestSecondDaemonStartsNoPlugin: a daemon whose log directory another
// process has open fails at once with an error that names that process
// (Badger's own refusal names none), before its plugins run their
// Configure (a rendezvousSink with no peers marks dir when it is
// configured; before, the failed open cancelled the starts, which most
// often had not got that far yet).
func TestSecondDaemonStartsNoPlugin(t *testing.T) {
	t.Setenv(pluginVar, "rendezvous")
	dir, logDir := t.TempDir(), t.TempDir()
	first, err := badgerlog.Open(logDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	cfg := sinksConfig(t, "", logDir, fmt.Sprintf(`
[[sink]]
name = "a"
command = %q
config = { plugin_env = %q, dir = %q, name = "a", peers = [] }
`, os.Args[0], pluginVar, dir))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = New(cfg, &Options{Notifier: noNotifier{}}).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "is in use by process "+strconv.Itoa(os.Getpid())) {
		t.Errorf("Run on a log another process has open = %v, want an error naming the process", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
		t.Error("the sink's plugin was configured: the second daemon started it before it found the log in use")
	}
}

// The helper plugins of this file; TestMain serves them.
var (
	_ sdk.Sink = rendezvousSink{}
	_ sdk.Sink = rejectSink{}
)
