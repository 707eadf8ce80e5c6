package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/tests/harness"
)

// TestOperatorPushesStuckEventsThrough plays an operator's hour: a sink
// refuses events (they land in its DLQ), the operator sees it in `pipelined
// sinks` and in /metrics, fixes the receiver, retries the DLQ, and replays a
// time range to the sink.
func TestOperatorPushesStuckEventsThrough(t *testing.T) {
	recv := harness.NewReceiver(t)
	recv.SetAnswer(func(string, []byte) (int, string) { return http.StatusUnprocessableEntity, "crm is in maintenance" })

	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms" }
`, recv.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)

	// Before anything happens, the counters that an alert's increase()
	// reads are there at zero, so that the first dead letters below are a
	// rise from 0 (examples/prometheus/alerts.yml).
	harness.Eventually(t, 10*time.Second, func() error {
		for _, series := range []string{`pipelined_deliveries_total{outcome="dead",sink="crm"}`, `pipelined_plugin_restarts_total{sink="crm"}`, `pipelined_delivery_call_failures_total{sink="crm"}`,
			`pipelined_ingest_requests_total{outcome="unavailable",source="callkaro"}`, `pipelined_ingest_requests_total{outcome="unauthorized",source="callkaro"}`} {
			if got := d.Metric(t, series); got != "0" {
				return fmt.Errorf("/metrics %s = %q before any webhook, want 0", series, got)
			}
		}
		return nil
	})

	var ids []string
	for i := range 5 {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprint("ops-", i), "interested"))
		if err != nil || code != 200 {
			t.Fatalf("POST = %d %v %v", code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}
	// 422 is permanent: every event goes to the DLQ with the receiver's reason.
	harness.Eventually(t, 20*time.Second, func() error {
		if out := d.CLI(t, "dlq", "list", "crm"); !strings.Contains(out, ids[4]) {
			return fmt.Errorf("the refused events never reached the DLQ:\n%s", out)
		}
		return nil
	})
	var dl admin.DeadLetterList
	if err := json.Unmarshal([]byte(d.CLI(t, "dlq", "list", "crm", "--json")), &dl); err != nil {
		t.Fatalf("dlq list --json: %v", err)
	}
	if len(dl.DeadLetters) != len(ids) {
		t.Errorf("dlq list --json shows %d dead letters, want %d", len(dl.DeadLetters), len(ids))
	}
	for _, e := range dl.DeadLetters {
		if !strings.Contains(e.Error, "crm is in maintenance") {
			t.Errorf("dead letter %s: error %q, want the receiver's reason", e.ID, e.Error)
		}
	}
	// `pipelined sinks` shows crm's 5 dead letters in its DLQ column.
	if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "DEAD"); got != "5" {
		t.Errorf("pipelined sinks: crm's DLQ column = %q, want 5", got)
	}
	for _, series := range []string{`pipelined_deliveries_total{outcome="dead",sink="crm"}`, `pipelined_dead_letters{sink="crm"}`, `pipelined_ingest_requests_total{outcome="accepted",source="callkaro"}`} {
		if got := d.Metric(t, series); got != "5" {
			t.Errorf("/metrics %s = %q, want 5", series, got)
		}
	}

	// The receiver is fixed: retry the DLQ.
	recv.SetAnswer(func(string, []byte) (int, string) { return http.StatusOK, "" })
	d.CLI(t, "dlq", "retry", "crm", "--all")
	timesAtLeast := func(n int) func() error {
		return func() error {
			got := recv.Accepted()
			for _, id := range ids {
				if got[id] < n {
					return fmt.Errorf("the receiver got event %s %d times, want %d", id, got[id], n)
				}
			}
			return nil
		}
	}
	harness.Eventually(t, 20*time.Second, timesAtLeast(1))
	queuesEmpty(t, d, 20*time.Second) // the deliveries are settled: a replay finds nothing queued
	// A replay sends the last hour again, with the same event ids.
	var rep admin.ReplayProgress
	if err := json.Unmarshal([]byte(d.CLI(t, "replay", "--sink", "crm", "--since", "1h", "--json")), &rep); err != nil {
		t.Fatalf("replay --json: %v", err)
	}
	if !rep.Done || rep.Enqueued != len(ids) || rep.Matched != len(ids) {
		t.Errorf("replay --json = %+v, want done with %d matched and enqueued", rep, len(ids))
	}
	harness.Eventually(t, 20*time.Second, timesAtLeast(2))
}

// sinksColumn returns the cell of column col in the row of sink in the
// table `pipelined sinks` prints.
func sinksColumn(t *testing.T, table, sink, col string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(table), "\n")
	header := lines[0]
	at := strings.Index(header, col)
	if at < 0 {
		t.Fatalf("pipelined sinks has no column %s:\n%s", col, table)
	}
	for _, line := range lines[1:] {
		if f := strings.Fields(line); len(f) > 0 && f[0] == sink {
			if at >= len(line) {
				return ""
			}
			cell, _, _ := strings.Cut(line[at:], " ")
			return cell
		}
	}
	t.Fatalf("pipelined sinks has no row %s:\n%s", sink, table)
	return ""
}
