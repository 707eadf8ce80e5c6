package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// logRecords returns the daemon's JSON log records whose message starts
// with prefix.
func logRecords(t *testing.T, d *harness.Daemon, prefix string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(d.Log(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) != nil {
			continue // a plugin's own line, or a panic's
		}
		if msg, _ := r["msg"].(string); strings.HasPrefix(msg, prefix) {
			out = append(out, r)
		}
	}
	return out
}

const (
	stopWaitMsg      = "shutting down: waiting for a sink's batch in flight to be settled"
	stopUnsettledMsg = "shutdown_timeout passed: the sink's events in flight were not settled and will be delivered again after the restart"
)

// TestSIGTERMWithASlowSinkSaysWhatItWaitsFor stops pipelined (SIGTERM, as
// systemctl stop does) while the http sink's batch of 3 events waits on
// an endpoint that does not answer, with shutdown_timeout = 10s: after 2s
// the log names the sink and its 3 events in flight, with how long it
// waited and how long is left, and so does systemd's status; 5 s before
// the deadline the daemon wraps the batch up (the http sink cancels its
// request and answers, the first event to retry, the 2 others not
// attempted), settles that answer and exits 0 without waiting for the
// deadline, and without the warning that events will be delivered again
// (a batch given up at the deadline; see TestShutdownSaysWhatItWaitsFor
// in pipeline/daemon for a sink that does not answer a wrap up). The
// restart then delivers them.
func TestSIGTERMWithASlowSinkSaysWhatItWaitsFor(t *testing.T) {
	harness.SkipIfShort(t)
	const shutdownTimeout = 10 * time.Second
	const wrapUpAt = 5 * time.Second // the deadline less the 5 s reserve
	crm := harness.NewReceiver(t)
	var entered atomic.Int32
	hang := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hang) }) }
	t.Cleanup(release) // before the receiver closes: it waits for its handlers
	crm.SetAnswer(func(string, []byte) (int, string) {
		entered.Add(1)
		<-hang
		return http.StatusServiceUnavailable, "gone away"
	})
	dir := t.TempDir()
	cfg := harness.WriteConfig(t, dir, harness.Listeners(fmt.Sprintf("shutdown_timeout = %q", shutdownTimeout.String()))+
		harness.BadgerLog(filepath.Join(dir, "log"))+harness.CallKaroSource+
		fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q, timeout = "60s" }
delivery = { batch_wait = "1s" }
`, crm.URL)+harness.AllCallsRoute("crm"))
	sd := newFakeSystemd(t)
	d, err := harness.StartWith(t, cfg, harness.Options{Env: []string{"NOTIFY_SOCKET=" + sd.path}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for n := range 3 {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("slow-stop-%d", n), "interested"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST = %d %v %v", code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}
	// The premise: the batch is in flight, its first request held by the
	// endpoint (the three were posted within batch_wait of the first).
	harness.Eventually(t, 10*time.Second, func() error {
		if entered.Load() == 0 {
			return fmt.Errorf("the endpoint has no request yet")
		}
		return nil
	})

	t0 := time.Now()
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("pipelined still runs 30s after SIGTERM")
	}
	took := time.Since(t0)
	if code := d.ExitCode(); code != 0 {
		t.Errorf("pipelined exited %d after SIGTERM, want 0", code)
	}
	if took < wrapUpAt || took > shutdownTimeout {
		t.Errorf("pipelined exited %v after SIGTERM, want soon after the wrap up (%v), before shutdown_timeout (%v)", took, wrapUpAt, shutdownTimeout)
	}

	waits := logRecords(t, d, stopWaitMsg)
	if len(waits) != 1 { // at 2s; the next would be at 7s, after the wrap up
		t.Errorf("%d lines %q, want 1 (after the 2s grace):\n%s", len(waits), stopWaitMsg, d.Log())
	}
	for _, r := range waits {
		waited, _ := time.ParseDuration(fmt.Sprint(r["waited"]))
		left, _ := time.ParseDuration(fmt.Sprint(r["deadline_in"]))
		if r["sink"] != "crm" || r["events"] != 3.0 || waited < 2*time.Second || waited > 2500*time.Millisecond ||
			left <= 7*time.Second || left > 8*time.Second {
			t.Errorf("log record %v: want sink crm, events 3, waited 2s, deadline_in 8s or a little less", r)
		}
	}
	if wrapped := logRecords(t, d, wrapUpMsg); len(wrapped) != 1 || wrapped[0]["sink"] != "crm" || wrapped[0]["events"] != 3.0 {
		t.Errorf("lines %q = %v, want one with sink crm, events 3:\n%s", wrapUpMsg, wrapped, d.Log())
	}
	if unsettled := logRecords(t, d, stopUnsettledMsg); len(unsettled) != 0 {
		t.Errorf("lines %q = %v, want none: the batch was wrapped up and settled", stopUnsettledMsg, unsettled)
	}
	var status []string
	for len(sd.msgs) > 0 {
		if m := <-sd.msgs; strings.HasPrefix(m.fields["STATUS"], "stopping") {
			status = append(status, m.fields["STATUS"])
		}
	}
	if len(status) != 1 || !strings.HasPrefix(status[0], "stopping: waiting for sink crm (3 events in flight, ") || !strings.HasSuffix(status[0], "s left)") {
		t.Errorf("STATUS= while stopping = %q, want one \"stopping: waiting for sink crm (3 events in flight, 8s left)\"", status)
	}

	// What the log promised: the restart delivers the 3 events.
	release()
	crm.SetAnswer(harness.Answer(http.StatusOK))
	harness.Start(t, cfg)
	harness.Eventually(t, 20*time.Second, func() error {
		got := crm.Accepted()
		for _, id := range ids {
			if got[id] == 0 {
				return fmt.Errorf("event %s not delivered after the restart (accepted: %v)", id, got)
			}
		}
		return nil
	})
}
