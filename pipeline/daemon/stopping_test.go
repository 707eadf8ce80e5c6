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
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
)

// slowSink is a helper plugin that holds each batch: it writes a file
// "entered" holding the batch's size in its config's dir, then answers
// delivered after hold, or never ("forever": only the host's ctx ends the
// call). With close_hang its Close never returns, as a sink stuck
// flushing: only a kill ends the process.
type slowSink struct {
	dir       string
	hold      time.Duration // 0: forever
	closeHang bool
}

func (s *slowSink) Configure(_ context.Context, raw json.RawMessage) error {
	var c struct {
		Dir       string `json:"dir"`
		Hold      string `json:"hold"`
		CloseHang bool   `json:"close_hang"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	s.dir, s.closeHang = c.Dir, c.CloseHang
	if c.Hold != "forever" {
		d, err := time.ParseDuration(c.Hold)
		if err != nil {
			return fmt.Errorf("hold: %w", err)
		}
		s.hold = d
	}
	return nil
}

func (s *slowSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if err := os.WriteFile(filepath.Join(s.dir, "entered"), fmt.Appendf(nil, "%d", len(batch)), 0o600); err != nil {
		return nil, err
	}
	var hold <-chan time.Time
	if s.hold > 0 {
		hold = time.After(s.hold)
	}
	select {
	case <-hold:
		return nil, nil
	case <-ctx.Done():
		if s.hold == 0 && errors.Is(context.Cause(ctx), sdk.ErrWrapUp) {
			// Held forever: a sink stuck in its own code answers no wrap
			// up either; the stop gives up on its batch at the deadline.
			select {}
		}
		return nil, ctx.Err()
	}
}

func (s *slowSink) Close(context.Context) error {
	if s.closeHang {
		select {} // ignores ctx: only a kill ends it
	}
	return nil
}

// slowStop is a daemon of one sink, "crm", whose plugin is a slowSink, on
// a memlog the test reads, logging JSON to logs and telling nt what it
// tells systemd.
type slowStop struct {
	d    *Daemon
	l    keptLog
	logs *testlog.Buffer
	nt   *recordingNotifier
	dir  string
	addr daemonAddrs
	stop func() <-chan struct{}
}

// startSlow starts a slowStop with [server] shutdown_timeout, the sink's
// plugin holding each batch for hold and, with closeHang, never
// returning from Close; timing is the stop's (zero: the defaults).
func startSlow(t *testing.T, shutdownTimeout time.Duration, hold string, closeHang bool, timing stopTiming) *slowStop {
	t.Helper()
	t.Setenv(pluginVar, "slow")
	s := &slowStop{l: keptLog{memlog.New()}, logs: &testlog.Buffer{}, nt: &recordingNotifier{}, dir: t.TempDir()}
	toml := sinksTOML(fmt.Sprintf("shutdown_timeout = %q", shutdownTimeout.String()), t.TempDir(), fmt.Sprintf(`
[[sink]]
name = "crm"
command = %q
config = { plugin_env = %q, dir = %q, hold = %q, close_hang = %v }

[[route]]
name = "all"
when = "true"
to = ["crm"]
`, os.Args[0], pluginVar, s.dir, hold, closeHang))
	o := Options{Logger: slog.New(slog.NewJSONHandler(s.logs, nil)), Notifier: s.nt}
	s.d, s.addr, s.stop = startStoppable(t, toml, o, func(d *Daemon) {
		d.openLog = func(context.Context, config.Log, *slog.Logger, *atomic.Int64) (pipeline.Log, func() map[string]int64, error) {
			return s.l, nil, nil
		}
		d.sinks.timing = timing
	})
	return s
}

// keptLog is a memlog that Close leaves open, so that a test reads its
// queues after Run has returned.
type keptLog struct{ *memlog.Log }

func (keptLog) Close() error { return nil }

// appendEvents appends n events for crm in one write, so that the
// dispatcher takes them as one batch.
func (s *slowStop) appendEvents(t *testing.T, n int) {
	t.Helper()
	var entries []pipeline.Entry
	for i := range n {
		entries = append(entries, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("ev-%d", i), Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
		})
	}
	if _, err := s.l.Append(context.Background(), entries); err != nil {
		t.Fatalf("Append = %v", err)
	}
}

// waitEntered waits until the plugin was handed a batch of n events.
func (s *slowStop) waitEntered(t *testing.T, n int) {
	t.Helper()
	waitUntil(t, "the plugin to be handed the batch", func() bool {
		b, err := os.ReadFile(filepath.Join(s.dir, "entered"))
		return err == nil && string(b) == fmt.Sprint(n)
	})
}

// waitInFlight checks the premise of a slow stop: the plugin holds a
// batch of n events, and the dispatcher counts them in flight.
func (s *slowStop) waitInFlight(t *testing.T, n int) {
	t.Helper()
	s.waitEntered(t, n)
	disp := s.d.sinks.by["crm"].disp.Load()
	if st := disp.Status(); st.InFlight != n {
		t.Fatalf("dispatcher's batch in flight before the stop = %d events, want %d", st.InFlight, n)
	}
}

// stopAndWait starts the shutdown and waits for Run to return; it
// returns how long that took.
func (s *slowStop) stopAndWait(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	select {
	case <-s.stop():
	case <-time.After(within):
		t.Fatalf("Run did not return within %v of its ctx ending", within)
	}
	return time.Since(t0)
}

// lines returns the log records whose message starts with prefix.
func lines(t *testing.T, logs *testlog.Buffer, prefix string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, r := range logs.Lines(t, "") {
		if msg, _ := r["msg"].(string); strings.HasPrefix(msg, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// statuses returns what the daemon told systemd as STATUS= that starts
// with prefix.
func (r *recordingNotifier) statuses(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.sent {
		if v, ok := strings.CutPrefix(s, "STATUS="); ok && strings.HasPrefix(v, prefix) {
			out = append(out, v)
		}
	}
	return out
}

const (
	msgBatchWait  = "shutting down: waiting for a sink's batch in flight to be settled"
	msgUnsettled  = "shutdown_timeout passed: the sink's events in flight were not settled and will be delivered again after the restart"
	msgPluginWait = "shutting down: waiting for a sink plugin to exit"
	msgKilled     = "sink plugin did not stop in time and was killed (SIGKILL)"
)

// TestShutdownSaysWhatItWaitsFor stops a daemon while its sink's plugin
// holds a batch of 3 events past shutdown_timeout, and whose Close then
// never returns: the log says, after the grace and then every few
// beats, which sink it waits for, with how many events, how long so far
// and until the deadline; at the deadline, that the 3 events will be
// delivered again after the restart (they are still queued); then that
// it waits for the plugin to exit, and that it killed it. systemd's
// status says the same while it waits.
func TestShutdownSaysWhatItWaitsFor(t *testing.T) {
	const shutdownTimeout = 1500 * time.Millisecond
	timing := stopTiming{grace: 300 * time.Millisecond, every: 500 * time.Millisecond, pluginStop: time.Second}
	s := startSlow(t, shutdownTimeout, "forever", true, timing)
	s.appendEvents(t, 3)
	s.waitInFlight(t, 3)

	// shutdown_timeout, then the plugin's stop; the slack covers the rest.
	if took := s.stopAndWait(t, 30*time.Second); took > shutdownTimeout+timing.pluginStop+5*time.Second {
		t.Errorf("Run returned %v after its ctx ended, want about %v", took, shutdownTimeout+timing.pluginStop)
	}

	waits := lines(t, s.logs, msgBatchWait)
	// At 0.3s, 0.8s and 1.3s of the 1.5s: a few, not a flood (one on a
	// machine so loaded that the beats come late; TestStopReport checks
	// the beats at given times).
	if len(waits) < 1 || len(waits) > 3 {
		t.Errorf("%d lines %q, want 1 to 3 (after the grace, then every beat):\n%s", len(waits), msgBatchWait, s.logs)
	}
	for _, r := range waits {
		if r["level"] != "INFO" || r["sink"] != "crm" || r["events"] != 3.0 || r["waited"] == nil || r["deadline_in"] == nil {
			t.Errorf("log record %v: want INFO, sink crm, events 3, waited and deadline_in", r)
		}
	}
	unsettled := lines(t, s.logs, msgUnsettled)
	if len(unsettled) != 1 {
		t.Fatalf("%d lines %q, want 1:\n%s", len(unsettled), msgUnsettled, s.logs)
	}
	if r := unsettled[0]; r["level"] != "WARN" || r["sink"] != "crm" || r["events"] != 3.0 || r["shutdown_timeout"] != "1.5s" ||
		!strings.Contains(r["msg"].(string), "TimeoutStopSec") {
		t.Errorf("log record %v: want WARN, sink crm, events 3, shutdown_timeout %v and the advice on TimeoutStopSec", r, shutdownTimeout)
	}
	if got := lines(t, s.logs, msgPluginWait); len(got) == 0 || got[0]["sink"] != "crm" || got[0]["pid"] == nil {
		t.Errorf("lines %q = %v, want one naming sink crm and its pid", msgPluginWait, got)
	}
	if got := lines(t, s.logs, msgKilled); len(got) != 1 || got[0]["sink"] != "crm" || got[0]["pid"] == nil || got[0]["level"] != "WARN" {
		t.Errorf("lines %q = %v, want one WARN naming sink crm and its pid", msgKilled, got)
	}
	if got := lines(t, s.logs, "plugin stopped"); len(got) != 0 {
		t.Errorf("lines %q = %v, want none for a plugin that was killed", "plugin stopped", got)
	}

	// journalctl -p warning shows those two lines, and no other.
	var warns []string
	for _, r := range s.logs.Lines(t, "") {
		if r["level"] == "WARN" || r["level"] == "ERROR" {
			warns = append(warns, r["msg"].(string))
		}
	}
	if len(warns) != 2 || !strings.HasPrefix(warns[0], msgUnsettled) || warns[1] != msgKilled {
		t.Errorf("warnings and errors logged = %q, want the events to be delivered again, then the kill", warns)
	}

	st := s.nt.statuses("stopping: waiting for sink crm (3 events in flight, ")
	if len(st) == 0 {
		t.Errorf("no status \"stopping: waiting for sink crm (3 events in flight, ...\"; sent: %v", s.nt.sent)
	}
	if got := s.nt.statuses("stopping: waiting for plugin of sink crm (pid "); len(got) == 0 {
		t.Errorf("no status naming the plugin it waits for; sent: %v", s.nt.sent)
	}

	// What the log promised: the events are still queued, to be
	// delivered again after the restart.
	qs, err := s.l.Queue("crm").Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if qs.Ready+qs.Retrying != 3 {
		t.Errorf("queue of crm after the stop = %+v, want the 3 events still queued", qs)
	}
}

// TestShutdownWaitsAndSaysSo stops a daemon while its sink's plugin holds
// a batch for longer than the grace but less than shutdown_timeout: the
// log says it waits for the batch, and nothing about events to be
// delivered again, as they were delivered.
func TestShutdownWaitsAndSaysSo(t *testing.T) {
	timing := stopTiming{grace: 200 * time.Millisecond, every: 5 * time.Second}
	s := startSlow(t, 20*time.Second, "1s", false, timing)
	s.appendEvents(t, 2)
	s.waitInFlight(t, 2)
	s.stopAndWait(t, 30*time.Second)

	if waits := lines(t, s.logs, msgBatchWait); len(waits) != 1 || waits[0]["events"] != 2.0 {
		t.Errorf("lines %q = %v, want 1 with events 2:\n%s", msgBatchWait, waits, s.logs)
	}
	for _, prefix := range []string{msgUnsettled, msgKilled, "dispatcher did not"} {
		if got := lines(t, s.logs, prefix); len(got) != 0 {
			t.Errorf("lines %q = %v, want none", prefix, got)
		}
	}
	qs, err := s.l.Queue("crm").Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if qs != (pipeline.QueueStats{}) {
		t.Errorf("queue of crm after the stop = %+v, want empty (delivered while shutdown waited)", qs)
	}
}

// TestShutdownSaysWhichIngestRequestsItWaitsFor stops a daemon while a
// client is halfway through sending a webhook's body: the ingest
// listener's shutdown waits for that request, and the log says so, with
// how many, until shutdown_timeout.
func TestShutdownSaysWhichIngestRequestsItWaitsFor(t *testing.T) {
	timing := stopTiming{grace: 300 * time.Millisecond, every: 5 * time.Second}
	s := startSlow(t, 1500*time.Millisecond, "1ms", false, timing)
	c, err := net.Dial("tcp", s.addr.ingest)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"event":"call_ended"}`
	if _, err := fmt.Fprintf(c, "POST /hooks/src HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body)+10, body); err != nil {
		t.Fatal(err)
	}
	// The premise: the handler has the request and waits for the rest
	// of its body.
	waitUntil(t, "the request to be in flight", func() bool { return s.d.ingestInFlight.Load() == 1 })
	s.stopAndWait(t, 30*time.Second)

	const msg = "shutting down: waiting for the ingest requests in flight to be answered"
	if got := lines(t, s.logs, msg); len(got) != 1 || got[0]["requests"] != 1.0 || got[0]["deadline_in"] == nil {
		t.Errorf("lines %q = %v, want one with requests 1:\n%s", msg, got, s.logs)
	}
	if got := s.nt.statuses("stopping: waiting for 1 ingest request in flight ("); len(got) != 1 {
		t.Errorf("no status naming the ingest request; sent: %v", s.nt.sent)
	}
	if got := lines(t, s.logs, "ingest shutdown did not finish in time"); len(got) != 1 || got[0]["requests"] != 1.0 {
		t.Errorf("ingest shutdown lines = %v, want one with requests 1", got)
	}
}

// TestFastShutdownIsQuiet stops a daemon whose sink delivers at once,
// with the default grace: the log says "shutting down" and nothing of
// waits, deadlines or kills, and systemd's status is not touched.
func TestFastShutdownIsQuiet(t *testing.T) {
	s := startSlow(t, 25*time.Second, "1ms", false, stopTiming{})
	s.appendEvents(t, 3)
	s.waitEntered(t, 3)
	waitUntil(t, "the batch to be delivered", func() bool {
		qs, err := s.l.Queue("crm").Stats(context.Background())
		return err == nil && qs == pipeline.QueueStats{}
	})
	if took := s.stopAndWait(t, 30*time.Second); took > stopGrace {
		t.Skipf("the shutdown took %v, more than the grace (%v): too slow a machine to check it is quiet", took, stopGrace)
	}
	if got := lines(t, s.logs, "shutting down"); len(got) != 1 || got[0]["msg"] != "shutting down" {
		t.Errorf("shutdown lines = %v, want only \"shutting down\"", got)
	}
	for _, prefix := range []string{msgUnsettled, msgKilled, "sink plugin did not", "dispatcher did not"} {
		if got := lines(t, s.logs, prefix); len(got) != 0 {
			t.Errorf("lines %q = %v, want none", prefix, got)
		}
	}
	if got := s.nt.statuses("stopping"); len(got) != 0 {
		t.Errorf("statuses = %v, want none", got)
	}
}

// TestStopReport checks what one report of a stop says, at given times:
// one line per thing waited for, with systemd's status; past the
// deadline, only a step that the deadline does not end (the writer), at
// WARN, as overdue; nothing once the step is over.
func TestStopReport(t *testing.T) {
	var logs testlog.Buffer
	var status []string
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	const limit = 25 * time.Second
	// The reports of its own goroutine come after an hour: never here.
	rep := reportStop(log, func(s string) { status = append(status, s) }, "shutdown_timeout", limit, stopTiming{grace: time.Hour})
	defer rep.stop()
	sinks := []waiting{
		{msg: "waiting for a", attrs: []any{"sink", "a"}, status: "sink a (3 events in flight)"},
		{msg: "waiting for b", attrs: []any{"sink", "b"}, status: "sink b (1 events in flight)"},
	}
	pending := sinks
	rep.waitFor(func() []waiting { return pending })

	rep.say(rep.start.Add(12 * time.Second))
	got := logs.Lines(t, "")
	if len(got) != 2 {
		t.Fatalf("lines at 12s = %v, want one per sink", got)
	}
	for i, r := range got {
		if r["level"] != "INFO" || r["msg"] != sinks[i].msg || r["waited"] != "12s" || r["deadline_in"] != "13s" {
			t.Errorf("log record %v: want INFO, %q, waited 12s, deadline_in 13s", r, sinks[i].msg)
		}
	}
	if want := "stopping: waiting for sink a (3 events in flight), sink b (1 events in flight); 13s left"; len(status) != 1 || status[0] != want {
		t.Errorf("status = %q, want [%q]", status, want)
	}

	logs.Reset()
	rep.say(rep.start.Add(limit - 30*time.Millisecond))
	if got := logs.Lines(t, "waiting for a"); len(got) != 1 || got[0]["level"] != "INFO" || got[0]["deadline_in"] != "30ms" {
		t.Errorf("lines 30ms before the deadline = %v, want INFO with deadline_in 30ms", got)
	}

	logs.Reset()
	rep.say(rep.start.Add(limit + time.Second))
	if got := logs.Lines(t, ""); len(got) != 0 {
		t.Errorf("lines past the deadline of a step it bounds = %v, want none", got)
	}

	rep.waitPastDeadline(waitingOn("waiting for the writer", "the writer"))
	rep.say(rep.start.Add(limit + 5*time.Second))
	if got := logs.Lines(t, ""); len(got) != 1 || got[0]["level"] != "WARN" || got[0]["overdue"] != "5s" || got[0]["deadline_in"] != nil {
		t.Errorf("lines past the deadline for the writer = %v, want one WARN with overdue 5s", got)
	}
	if want := "stopping: waiting for the writer (5s past shutdown_timeout)"; status[len(status)-1] != want {
		t.Errorf("status = %q, want %q last", status, want)
	}

	logs.Reset()
	rep.waitFor(func() []waiting { return nil })
	rep.say(rep.start.Add(time.Second))
	if got := logs.Lines(t, ""); len(got) != 0 {
		t.Errorf("lines when nothing is pending = %v, want none", got)
	}
}

func TestStoppingStatus(t *testing.T) {
	for _, tc := range []struct {
		parts []string
		left  time.Duration
		want  string
	}{
		{[]string{"sink crm (500 events in flight)"}, 12 * time.Second, "stopping: waiting for sink crm (500 events in flight, 12s left)"},
		{[]string{"the writer"}, 3 * time.Second, "stopping: waiting for the writer (3s left)"},
		{[]string{"the writer"}, -5 * time.Second, "stopping: waiting for the writer (5s past shutdown_timeout)"},
		{[]string{"sink a (1 events in flight)", "sink b (2 events in flight)"}, time.Second, "stopping: waiting for sink a (1 events in flight), sink b (2 events in flight); 1s left"},
	} {
		if got := stoppingStatus(tc.parts, tc.left, "shutdown_timeout"); got != tc.want {
			t.Errorf("stoppingStatus(%q, %v) = %q, want %q", tc.parts, tc.left, got, tc.want)
		}
	}
}
