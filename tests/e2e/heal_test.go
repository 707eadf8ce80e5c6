package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/tests/harness"
)

// readyz returns the status code and answer of GET /readyz?verbose.
func readyz(d *harness.Daemon) (int, admin.Readiness, error) {
	var r admin.Readiness
	resp, err := harness.Client.Get(d.AdminURL + "/readyz?verbose")
	if err != nil {
		return 0, r, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r, err
}

// sinksRow returns the row of sink in `pipelined sinks` and the text under
// the LAST_ERROR heading (to the end of the row).
func sinksRow(t *testing.T, table, sink string) (row, lastError string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(table), "\n")
	at := strings.Index(lines[0], "LAST_ERROR")
	if at < 0 {
		t.Fatalf("pipelined sinks has no column LAST_ERROR:\n%s", table)
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 0 && f[0] == sink {
			if at < len(l) {
				lastError = strings.TrimSpace(l[at:])
			}
			return l, lastError
		}
	}
	t.Fatalf("pipelined sinks has no row %s:\n%s", sink, table)
	return "", ""
}

// TestKilledPluginComesBackWithoutTraffic kills a sink's plugin with
// SIGKILL while no event is waiting: a new process must run within 5s on
// its own, /readyz must answer 200 all along, and `pipelined sinks` shows
// it running with the exit as LAST_ERROR until a delivery succeeds.
func TestKilledPluginComesBackWithoutTraffic(t *testing.T) {
	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "tally"
plugin = "archive"
config = { dir = %q }
delivery = { batch_wait = "5ms" }
`, filepath.Join(dir, "archive"))+harness.AllCallsRoute("tally"))
	d := harness.Start(t, cfgFile)

	pid1 := d.SinkPID(t, "tally")
	if pid1 <= 0 {
		t.Fatalf("tally's plugin pid = %d once ready, want a running plugin", pid1)
	}
	if code, r, err := readyz(d); code != http.StatusOK || err != nil {
		t.Fatalf("GET /readyz before the kill = %d %+v %v, want 200", code, r, err)
	}
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 the plugin (pid %d): %v", pid1, err)
	}
	killed := time.Now()

	// Poll /readyz and the plugin's pid from this goroutine until a new
	// process runs; every /readyz answer on the way must be 200.
	var pid2, polls int
	var sawDown bool
	for time.Since(killed) < 5*time.Second {
		code, r, err := readyz(d)
		polls++
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /readyz %v after the kill = %d %+v %v, want 200 throughout", time.Since(killed).Round(time.Millisecond), code, r, err)
		}
		s := d.Sinks(t)["tally"]
		if s.Plugin != "running" {
			sawDown = true
		}
		if s.Plugin == "running" && s.PID > 0 && s.PID != pid1 {
			pid2 = s.PID
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pid2 == 0 {
		t.Fatalf("no new plugin process within 5s of kill -9 with no traffic: /v1/sinks = %+v", d.Sinks(t)["tally"])
	}
	t.Logf("new plugin pid %d after %v (%d /readyz polls, all 200; saw it down: %v)", pid2, time.Since(killed).Round(time.Millisecond), polls, sawDown)
	if err := syscall.Kill(pid1, 0); err == nil {
		t.Errorf("the killed plugin (pid %d) still exists", pid1)
	}

	table := d.CLI(t, "sinks")
	row, lastErr := sinksRow(t, table, "tally")
	if got := sinksColumn(t, table, "tally", "PLUGIN"); got != "running" {
		t.Errorf("pipelined sinks: tally PLUGIN = %q, want running:\n%s", got, table)
	}
	if !strings.Contains(lastErr, " ago: ") || !strings.Contains(lastErr, "exited") {
		t.Errorf("pipelined sinks: tally LAST_ERROR = %q, want the plugin's exit with its age (row %q)", lastErr, row)
	}
	if got := d.Metric(t, `pipelined_sink_up{sink="tally"}`); got != "1" {
		t.Errorf("/metrics: %q, want pipelined_sink_up{sink=\"tally\"} 1", got)
	}
	code, r, err := readyz(d)
	if err != nil || code != http.StatusOK || len(r.Checks) != 3 {
		t.Errorf("GET /readyz?verbose = %d %+v %v, want 200 with three checks", code, r, err)
	}
	for _, c := range r.Checks {
		if !c.OK {
			t.Errorf("GET /readyz?verbose: check %s failed: %s", c.Name, c.Error)
		}
	}

	// A delivery that succeeds clears LAST_ERROR.
	if code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("heal-1", "interested")); err != nil || code != http.StatusOK {
		t.Fatalf("POST = %d %v %v", code, ans, err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if _, lastErr := sinksRow(t, d.CLI(t, "sinks"), "tally"); lastErr != "-" {
			return fmt.Errorf("pipelined sinks: tally LAST_ERROR = %q after a delivery succeeded, want -", lastErr)
		}
		return nil
	})
}

// TestPluginThatExitsAtStartIsFailed configures a sink whose binary exits
// at start: the daemon serves all the same (/readyz 200), the sink shows
// failed with the binary's last stderr line, it is tried again, and
// webhooks are taken and wait in the log.
func TestPluginThatExitsAtStartIsFailed(t *testing.T) {
	dir := t.TempDir()
	crash := filepath.Join(dir, "pipelined-sink-crash")
	script := "#!/bin/sh\necho 'crash sink starting' >&2\necho 'fatal: cannot open /var/lib/crm/token: permission denied' >&2\nexit 1\n"
	if err := os.WriteFile(crash, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	const lastLine = "fatal: cannot open /var/lib/crm/token: permission denied"
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
command = %q
delivery = { batch_wait = "5ms" }
`, crash)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)

	code, r, err := readyz(d)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /readyz with a sink whose plugin exits at start = %d %+v %v, want 200", code, r, err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Plugin != "failed" || s.PluginReason != lastLine {
			return fmt.Errorf("/v1/sinks crm: plugin %q, plugin_reason %q; want failed, %q", s.Plugin, s.PluginReason, lastLine)
		}
		table := d.CLI(t, "sinks")
		if row, lastErr := sinksRow(t, table, "crm"); !strings.Contains(row, "failed: "+lastLine) || !strings.Contains(lastErr, " ago: ") {
			return fmt.Errorf("pipelined sinks: crm row %q, want PLUGIN %q and a LAST_ERROR with its age", row, "failed: "+lastLine)
		}
		return nil
	})
	if got := d.Metric(t, `pipelined_sink_up{sink="crm"}`); got != "0" {
		t.Errorf("/metrics: %q, want pipelined_sink_up{sink=\"crm\"} 0", got)
	}

	// Webhooks are taken; the event waits in the log for the sink.
	if code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("crash-1", "interested")); err != nil || code != http.StatusOK {
		t.Fatalf("POST with the crm sink failed = %d %v %v, want 200", code, ans, err)
	}
	// The supervisor tries again on its own, and /readyz stays 200.
	harness.Eventually(t, 10*time.Second, func() error {
		if code, r, err := readyz(d); err != nil || code != http.StatusOK {
			t.Fatalf("GET /readyz while crm fails = %d %+v %v, want 200", code, r, err)
		}
		l := d.Metric(t, `pipelined_plugin_restarts_total{sink="crm"}`)
		var n float64
		if _, err := fmt.Sscanf(l, "%g", &n); err != nil || n < 2 {
			return fmt.Errorf("/metrics: %q, want crm's plugin started again at least twice", l)
		}
		return nil
	})
	// Between its tries the sink shows failed (starting, briefly, while one
	// runs), with the event still queued.
	harness.Eventually(t, 10*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Plugin != "failed" || s.Ready+s.Retrying+s.Dead != 1 {
			return fmt.Errorf("/v1/sinks crm = %+v, want failed with the event queued", s)
		}
		return nil
	})
}

// TestSinksLastErrorShowsFailedDeliveries checks that LAST ERROR shows the
// receiver's refusal while events fail, with its age, and is blank once a
// later delivery succeeded; /readyz stays 200 all along.
func TestSinksLastErrorShowsFailedDeliveries(t *testing.T) {
	recv := harness.NewReceiver(t)
	recv.SetAnswer(func(string, []byte) (int, string) { return http.StatusServiceUnavailable, "crm is down" })
	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms", max_attempts = 2, backoff_min = "10ms", backoff_max = "20ms" }
`, recv.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)

	for i := range 2 {
		if code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprint("down-", i), "interested")); err != nil || code != http.StatusOK {
			t.Fatalf("POST = %d %v %v", code, ans, err)
		}
	}
	harness.Eventually(t, 20*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Dead != 2 {
			return fmt.Errorf("crm has %d dead letters, want 2", s.Dead)
		}
		return nil
	})
	if _, lastErr := sinksRow(t, d.CLI(t, "sinks"), "crm"); !strings.Contains(lastErr, "crm is down") || !strings.Contains(lastErr, " ago: ") {
		t.Errorf("pipelined sinks: crm LAST ERROR = %q with 2 events dead, want the receiver's refusal with its age", lastErr)
	}
	if code, r, err := readyz(d); err != nil || code != http.StatusOK {
		t.Errorf("GET /readyz while crm refuses = %d %+v %v, want 200", code, r, err)
	}

	recv.SetAnswer(harness.Answer(http.StatusOK))
	if code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("up-1", "interested")); err != nil || code != http.StatusOK {
		t.Fatalf("POST = %d %v %v", code, ans, err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if _, lastErr := sinksRow(t, d.CLI(t, "sinks"), "crm"); lastErr != "-" {
			return fmt.Errorf("pipelined sinks: crm LAST ERROR = %q after a delivery succeeded, want -", lastErr)
		}
		return nil
	})
}
