package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// fullLog is a memlog that says it is full while full is set, as a Badger
// log on a full disk does.
type fullLog struct {
	*memlog.Log
	full atomic.Bool
}

func (l *fullLog) CheckWrite() error {
	if l.full.Load() {
		return fmt.Errorf("%w: /var/lib/pipelined has 3 MiB free, the log needs 144 MiB in reserve", pipeline.ErrFull)
	}
	return l.Log.CheckWrite()
}

// running is a daemon started by startOnLog.
type running struct {
	d         *Daemon
	adminAddr string
	stop      context.CancelFunc // ends Run's ctx
	done      chan struct{}      // closed when Run returned, with err
	err       error
}

// startOnLog runs a daemon of cfg on l, with o (its OnReady and Notifier
// are set), until the test ends or r.stop; it returns once the daemon is
// ready.
func startOnLog(t *testing.T, cfg *config.Config, l pipeline.Log, o *Options) *running {
	t.Helper()
	adminAddr := make(chan string, 1)
	o.OnReady, o.Notifier = func(_, a net.Addr) { adminAddr <- a.String() }, noNotifier{}
	d := New(cfg, o)
	d.openLog = func(context.Context, config.Log, *slog.Logger, *atomic.Int64) (pipeline.Log, func() map[string]int64, error) {
		return l, nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, stop: cancel, done: make(chan struct{})}
	go func() { r.err = d.Run(ctx); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done })
	select {
	case r.adminAddr = <-adminAddr:
		return r
	case <-r.done:
		t.Fatalf("Run() = %v before it was ready", r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("daemon not ready within 20s")
	}
	return nil
}

// runOnLog runs a daemon of one sink on l, with o, until the test ends; it
// returns once the daemon is ready, with its admin address.
func runOnLog(t *testing.T, l pipeline.Log, o *Options) (*Daemon, string) {
	t.Helper()
	r := startOnLog(t, pluginConfig(t, ""), l, o)
	return r.d, r.adminAddr
}

// TestReadyzFollowsTheLogNotTheSinks runs a daemon and checks /readyz: 200
// while the sink's plugin is killed and comes back, 503 naming the log
// while the log says it is full, and 200 again once it is not, with no
// webhook in between.
func TestReadyzFollowsTheLogNotTheSinks(t *testing.T) {
	l := &fullLog{Log: memlog.New()}
	d, adminAddr := runOnLog(t, l, &Options{})
	base := "http://" + adminAddr
	readyz := func() (int, admin.Readiness) {
		t.Helper()
		resp, err := http.Get(base + "/readyz?verbose")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r admin.Readiness
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, r
	}

	tests := []struct {
		name      string
		setup     func(t *testing.T)
		wantCode  int
		wantError string
	}{
		{"serving", func(*testing.T) {}, http.StatusOK, ""},
		{"sink plugin killed", func(t *testing.T) {
			_, pid, _ := d.sinks.list()[0].sup.State()
			if pid <= 0 {
				t.Fatalf("sink s has no plugin pid")
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the supervisor to see the kill", func() bool {
				_, p, _ := d.sinks.list()[0].sup.State()
				return p != pid
			})
		}, http.StatusOK, ""},
		{"log full", func(*testing.T) { l.full.Store(true) }, http.StatusServiceUnavailable,
			"log: the event log cannot take writes: event log is full: /var/lib/pipelined has 3 MiB free, the log needs 144 MiB in reserve"},
		{"space freed", func(*testing.T) { l.full.Store(false) }, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup(t)
			code, r := readyz()
			if code != tt.wantCode || r.Error != tt.wantError {
				t.Errorf("GET /readyz = %d %q, want %d %q", code, r.Error, tt.wantCode, tt.wantError)
			}
			var names []string
			for _, c := range r.Checks {
				names = append(names, c.Name)
			}
			if fmt.Sprint(names) != "[log listeners writer]" {
				t.Errorf("GET /readyz?verbose checks = %v, want [log listeners writer]", names)
			}
		})
	}
}

// TestStartOnAFullDiskSaysSo: a daemon started with its log unable to take
// writes (a disk too small for the reserve) says so, with the log's
// reason, before it says it is ready.
func TestStartOnAFullDiskSaysSo(t *testing.T) {
	l := &fullLog{Log: memlog.New()}
	l.full.Store(true)
	var logs testlog.Buffer
	runOnLog(t, l, &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	out := logs.String()
	warn := strings.Index(out, "the event log cannot take writes")
	if warn < 0 || !strings.Contains(out, "the log needs 144 MiB in reserve") || warn > strings.Index(out, "pipelined is ready") {
		t.Errorf("the start's log does not say, before it is ready, that the log cannot take writes:\n%s", out)
	}
}

// haltingLog is a memlog that stops taking writes when halt is called, as
// a Badger log does after a failed write ([pipeline.Halter]): its Append
// and its queues' Settle fail with ErrHalted.
type haltingLog struct {
	*memlog.Log
	halted chan struct{}
	err    atomic.Pointer[error]
}

func (l *haltingLog) halt() {
	err := fmt.Errorf("%w after a failed write: write event log: input/output error", pipeline.ErrHalted)
	l.err.Store(&err)
	close(l.halted)
}

func (l *haltingLog) Halted() <-chan struct{} { return l.halted }

func (l *haltingLog) HaltErr() error {
	if p := l.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (l *haltingLog) CheckWrite() error {
	if err := l.HaltErr(); err != nil {
		return err
	}
	return l.Log.CheckWrite()
}

func (l *haltingLog) Append(ctx context.Context, es []pipeline.Entry) ([]pipeline.Appended, error) {
	if err := l.HaltErr(); err != nil {
		return nil, err
	}
	return l.Log.Append(ctx, es)
}

func (l *haltingLog) Queue(sink string) pipeline.Queue { return haltingQueue{l.Log.Queue(sink), l} }

type haltingQueue struct {
	pipeline.Queue
	l *haltingLog
}

func (q haltingQueue) Fetch(ctx context.Context, max int) ([]pipeline.Delivery, error) {
	if err := q.l.HaltErr(); err != nil {
		return nil, err
	}
	return q.Queue.Fetch(ctx, max)
}

func (q haltingQueue) Settle(ctx context.Context, ss []pipeline.Settlement) error {
	if err := q.l.HaltErr(); err != nil {
		return err
	}
	return q.Queue.Settle(ctx, ss)
}

// TestAHaltedLogStopsTheDaemon: once the log stops taking writes for good
// (a failed write that only a new start heals), the daemon stops with an
// error that says so, where it stayed up answering 503 to every webhook:
// its exit status is then 1, which systemd's Restart=on-failure restarts.
// A batch in flight at the halt, whose outcome the log cannot record, does
// not hold the stop for shutdown_timeout (25s) retrying the settlement;
// and no batch starts after the halt (each would be delivered, and again
// after the restart).
func TestAHaltedLogStopsTheDaemon(t *testing.T) {
	t.Setenv(pluginVar, "slow")
	dir := t.TempDir()
	cfg := sinksConfig(t, "", t.TempDir(), fmt.Sprintf(`
[[sink]]
name = "crm"
command = %q
config = { plugin_env = %q, dir = %q, hold = "1s" }

[[route]]
name = "all"
when = "true"
to = ["crm"]
`, os.Args[0], pluginVar, dir))
	l := &haltingLog{Log: memlog.New(), halted: make(chan struct{})}
	var logs testlog.Buffer
	r := startOnLog(t, cfg, l, &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	appendOne := func(id string) {
		t.Helper()
		if _, err := l.Append(context.Background(), []pipeline.Entry{{
			Event:   pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	entered := filepath.Join(dir, "entered")
	appendOne("ev-1")
	waitUntil(t, "the batch in the plugin", func() bool {
		_, err := os.Stat(entered)
		return err == nil
	})
	// ev-2 waits behind the batch in flight: the next batch's, if any.
	if err := os.Remove(entered); err != nil {
		t.Fatal(err)
	}
	appendOne("ev-2")

	l.halt()
	halted := time.Now()
	select {
	case <-r.done:
		if !errors.Is(r.err, pipeline.ErrHalted) || !strings.Contains(r.err.Error(), "input/output error") {
			t.Errorf("Run() after the log halted = %v, want an error wrapping ErrHalted and its cause", r.err)
		}
		if took := time.Since(halted); took > 10*time.Second {
			t.Errorf("Run returned %v after the halt, want well under shutdown_timeout (25s): the batch's settlement was retried against a log that never writes again", took)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the daemon did not stop within 60s of its log's halt:\n%s", logs.String())
	}
	if _, err := os.Stat(entered); err == nil {
		t.Errorf("a batch (ev-2) went to the plugin after the log halted")
	}
	out := logs.String()
	for _, want := range []string{"stopping: the event log stopped writing", "the event log stopped writing: these entries will be delivered after the restart"} {
		if !strings.Contains(out, want) {
			t.Errorf("the daemon's log does not say %q:\n%s", want, out)
		}
	}
}
