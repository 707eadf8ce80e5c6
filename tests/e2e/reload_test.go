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

// reloadConfig is testConfig's first half (one archive sink, every call)
// with the archive's file prefix given, plus, when withLeads, the "leads"
// sink and the route of interested calls.
func reloadConfig(dir, prefix string, withLeads bool) string {
	cfg := callKaroHeader(filepath.Join(dir, "log")) + fmt.Sprintf(`
[[sink]]
name = "archive"
plugin = "archive"
config = { dir = %q, prefix = %q }
delivery = { batch_max = 100, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "200ms" }
`, filepath.Join(dir, "archive"), prefix) + harness.AllCallsRoute("archive")
	if withLeads {
		cfg += fmt.Sprintf(`
[[sink]]
name = "leads"
plugin = "archive"
config = { dir = %q, prefix = "leads" }
delivery = { batch_max = 100, batch_wait = "5ms" }
`, filepath.Join(dir, "leads")) + harness.InterestedRoute("leads")
	}
	return cfg
}

func TestServeReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, reloadConfig(dir, "events", false))
	d := harness.Start(t, cfgFile)
	hook := d.URL + "/hooks/callkaro"

	// A bad configuration is refused; the running one stays.
	harness.WriteConfig(t, dir, strings.Replace(reloadConfig(dir, "events", true), `to = ["leads"]`, `to = ["nowhere"]`, 1))
	d.Signal(syscall.SIGHUP)
	d.WaitLog(t, "reload refused", 1, 20*time.Second)
	if !strings.Contains(d.Log(), `unknown sink \"nowhere\"`) {
		t.Errorf("the refused reload did not log its problem")
	}
	code, ans, err := harness.Post(hook, harness.CallEvent("after-bad-reload", "interested"))
	if err != nil || code != 200 {
		t.Fatalf("POST after a refused reload = %d %v %v, want 200", code, ans, err)
	}
	first := ans["id"].(string)

	// A good one adds a sink and a route, under load, and restarts the
	// archive with a new config; nothing acknowledged is lost.
	l := harness.StartLoad(t, harness.LoadOptions{Prefix: "reload", Lead: interested}, d.URL)
	l.WaitCount(t, 20, 20*time.Second)
	harness.WriteConfig(t, dir, reloadConfig(dir, "calls", true))
	d.Signal(syscall.SIGHUP)
	d.WaitLog(t, "configuration reloaded", 1, 20*time.Second)
	l.WaitCount(t, l.Count()+20, 20*time.Second) // the load goes on after the reload
	acked := harness.IDs(l.Finish())

	code, ans, err = harness.Post(hook, harness.CallEvent("after-reload", "interested"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST after the reload = %d %v %v", code, ans, err)
	}
	lead := ans["id"].(string)
	all := append([]string{first, lead}, acked...)
	harness.WaitArchived(t, filepath.Join(dir, "archive"), all, 30*time.Second)
	leads := harness.WaitArchived(t, filepath.Join(dir, "leads"), []string{lead}, 30*time.Second)
	if len(leads[first]) != 0 {
		t.Errorf("an event accepted before the reload went to the sink the reload added")
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "archive", "calls-*")); len(files) == 0 {
		t.Errorf("the archive did not restart with its new config (no calls-* file)")
	}
	// The archive's new plugin runs, and the gauge says so although the
	// old plugin stopped after the new one started.
	if got := d.Metric(t, `pipelined_sink_up{sink="archive"}`); got != "1" {
		t.Errorf("/metrics after the archive restarted with its new config: %q, want pipelined_sink_up{sink=\"archive\"} 1", got)
	}
	t.Logf("%d events acknowledged during the reload, all archived", len(acked))

	// A reload that removes the sink removes its series: a sink with no
	// plugin is not down, and its counters would keep alerts on it alive
	// (examples/prometheus/alerts.yml).
	harness.WriteConfig(t, dir, reloadConfig(dir, "calls", false))
	d.Signal(syscall.SIGHUP)
	d.WaitLog(t, "configuration reloaded", 2, 20*time.Second)
	for _, series := range []string{`pipelined_sink_up{sink="leads"}`, `pipelined_sink_breaker_open{sink="leads"}`, `pipelined_deliveries_total{outcome="dead",sink="leads"}`} {
		if got := d.Metric(t, series); got != "" {
			t.Errorf("/metrics after the reload removed sink leads: %s = %q, want no such series", series, got)
		}
	}
	if got := d.Metric(t, `pipelined_sink_up{sink="archive"}`); got != "1" {
		t.Errorf("/metrics after the reload removed sink leads: pipelined_sink_up{sink=\"archive\"} = %q, want 1", got)
	}
}
