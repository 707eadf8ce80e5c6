package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestOutageWaitsAndPauseHolds plays a CRM that is down for longer than the
// old retry budget (12 attempts) with the defaults' shape (no max_attempts,
// max_age 72h, breaker after 5 failed calls), scaled down: the breaker
// opens (pipelined sinks, /metrics, one log line), the event is tried more
// than 12 times and stays out of the DLQ, and only one probe at a time
// goes out. The operator pauses the sink, the CRM comes back, the
// daemon restarts: the pause holds (nothing reaches the CRM while another
// sink gets a new event) until `pipelined sinks resume`, and then every
// event arrives.
func TestOutageWaitsAndPauseHolds(t *testing.T) {
	crm := harness.NewReceiver(t)
	crm.SetAnswer(func(string, []byte) (int, string) { return http.StatusServiceUnavailable, "crm is down" })
	audit := harness.NewReceiver(t)

	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms", backoff_min = "10ms", backoff_max = "200ms", breaker_probe = "100ms" }

[[sink]]
name = "audit"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms" }
`, crm.URL, audit.URL)+harness.AllCallsRoute("crm", "audit"))
	d := harness.Start(t, cfgFile)

	post := func(d *harness.Daemon, sid string) string {
		t.Helper()
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(sid, "interested"))
		if err != nil || code != 200 {
			t.Fatalf("POST %s = %d %v %v", sid, code, ans, err)
		}
		return ans["id"].(string)
	}
	first := post(d, "outage-1")
	harness.Eventually(t, 20*time.Second, func() error {
		if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "BREAKER"); got != "open" {
			return fmt.Errorf("pipelined sinks: crm BREAKER = %q, want open", got)
		}
		return nil
	})
	opened := time.Now()
	if got := d.Metric(t, `pipelined_sink_breaker_open{sink="crm"}`); got != "1" {
		t.Errorf(`pipelined_sink_breaker_open{sink="crm"} = %q, want 1`, got)
	}
	second := post(d, "outage-2")
	// Longer than the old budget: the events are probed past 12 attempts
	// (the probe is the oldest ready event, so the two may take turns).
	harness.Eventually(t, 30*time.Second, func() error {
		if n := len(crm.Attempts()[first]); n <= 12 {
			return fmt.Errorf("the CRM saw %d attempts of the first event, want more than 12", n)
		}
		return nil
	})
	if dl := d.DeadLetters(t, "crm"); len(dl) != 0 {
		t.Errorf("crm's DLQ holds %d events after an outage longer than 12 attempts, want 0", len(dl))
	}
	// While open only probes go out, one per breaker_probe (100ms, then
	// 200ms): at most one request per 100ms after the 5 failed calls.
	requests := 0
	for _, at := range crm.Attempts() {
		requests += len(at)
	}
	if limit := 5 + int(time.Since(opened)/(100*time.Millisecond)) + 1; requests > limit {
		t.Errorf("the CRM got %d requests in the %v since the breaker opened, want at most %d (one probe at a time)", requests, time.Since(opened), limit)
	}
	if n := strings.Count(d.Log(), "sink circuit breaker opened"); n != 1 {
		t.Errorf("log has %d lines \"sink circuit breaker opened\", want 1", n)
	}

	// Maintenance: pause, the CRM is fixed, the daemon restarts.
	if out := d.CLI(t, "sinks", "pause", "crm"); !strings.Contains(out, "sink crm paused") {
		t.Errorf("pipelined sinks pause crm = %q, want it to say paused", out)
	}
	// A pause holds what comes next, not a probe already sent: count the
	// attempts, and fix the CRM, once the daemon has stopped (its shutdown
	// finishes the call in flight).
	d.Signal(syscall.SIGTERM)
	<-d.Exited()
	before := len(crm.Attempts()[first])
	crm.SetAnswer(func(string, []byte) (int, string) { return http.StatusOK, "" })
	d = harness.Start(t, cfgFile)
	if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "PAUSED"); got != "paused" {
		t.Errorf("after a restart: pipelined sinks crm PAUSED = %q, want paused", got)
	}
	// And /metrics says so, for alerts that tell a paused sink from a
	// lagging one (examples/prometheus/alerts.yml).
	if got, other := d.Metric(t, `pipelined_sink_paused{sink="crm"}`), d.Metric(t, `pipelined_sink_paused{sink="audit"}`); got != "1" || other != "0" {
		t.Errorf("after a restart: /metrics pipelined_sink_paused crm = %q, audit = %q; want 1 and 0", got, other)
	}
	third := post(d, "outage-3")
	// audit delivers the new event: crm's dispatcher had the same chance.
	harness.Eventually(t, 20*time.Second, func() error {
		if audit.Accepted()[third] == 0 {
			return fmt.Errorf("audit has not received %s yet", third)
		}
		return nil
	})
	if got := crm.Accepted(); len(got) != 0 || len(crm.Attempts()[first]) != before {
		t.Fatalf("paused crm received %v (first event attempts %d, %d before the pause), want nothing", got, len(crm.Attempts()[first]), before)
	}

	if out := d.CLI(t, "sinks", "resume", "crm"); !strings.Contains(out, "sink crm resumed") {
		t.Errorf("pipelined sinks resume crm = %q, want it to say resumed", out)
	}
	if got := d.Metric(t, `pipelined_sink_paused{sink="crm"}`); got != "0" {
		t.Errorf("after resume: /metrics pipelined_sink_paused{sink=\"crm\"} = %q, want 0", got)
	}
	harness.Eventually(t, 20*time.Second, func() error {
		got := crm.Accepted()
		for _, id := range []string{first, second, third} {
			if got[id] == 0 {
				return fmt.Errorf("the CRM has not received %s after resume (got %v)", id, got)
			}
		}
		return nil
	})
	queuesEmpty(t, d, 20*time.Second)
	if dl := d.DeadLetters(t, "crm"); len(dl) != 0 {
		t.Errorf("crm's DLQ holds %d events, want 0", len(dl))
	}
}
