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

// TestOperatorSeesWhatHappenedToOneEvent asks the operator's first question,
// "did call X reach the CRM?", of a real daemon on a Badger log: one event
// goes to a CRM that fails once and then takes it, and to a second receiver
// that refuses it for good. `pipelined events show ID` answers with each
// sink's record, and `events list --sink S --state ...` finds the event.
func TestOperatorSeesWhatHappenedToOneEvent(t *testing.T) {
	crm := harness.NewReceiver(t)
	calls := 0
	crm.SetAnswer(func(string, []byte) (int, string) {
		if calls++; calls == 1 {
			return http.StatusServiceUnavailable, "crm is starting"
		}
		return http.StatusOK, ""
	})
	strict := harness.NewReceiver(t)
	strict.SetAnswer(func(string, []byte) (int, string) { return http.StatusUnprocessableEntity, "unknown field callSid" })

	dir := t.TempDir()
	delivery := `delivery = { batch_wait = "5ms", backoff_min = "50ms", backoff_max = "100ms" }`
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
%s

[[sink]]
name = "strict"
plugin = "http"
config = { url = %q }
%s
`, crm.URL, delivery, strict.URL, delivery)+harness.AllCallsRoute("crm", "strict"))
	d := harness.Start(t, cfgFile)

	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("rec-1", "interested"))
	if err != nil || code != 200 {
		t.Fatalf("POST = %d %v %v", code, ans, err)
	}
	id := ans["id"].(string)
	// The journal has a line for it, and one for a duplicate naming it.
	if code, ans, err = harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("rec-1", "interested")); err != nil || code != 200 || ans["duplicate"] != true {
		t.Fatalf("second POST = %d %v %v, want a duplicate", code, ans, err)
	}
	d.WaitLog(t, "webhook duplicate", 1, 5*time.Second)
	for _, msg := range []string{"webhook accepted", "webhook duplicate"} {
		if line := logLine(d.Log(), msg); !strings.Contains(line, id) || !strings.Contains(line, "callkaro") {
			t.Errorf("daemon log line %q = %q, want the event id %s and the source", msg, line, id)
		}
	}

	var ev admin.Event
	harness.Eventually(t, 20*time.Second, func() error {
		ev = admin.Event{}
		if err := json.Unmarshal([]byte(d.CLI(t, "events", "show", id, "--json")), &ev); err != nil {
			return err
		}
		for _, r := range ev.Deliveries {
			if r.State != "delivered" && r.State != "dead" {
				return fmt.Errorf("events show %s: %s is %s", id, r.Sink, r.State)
			}
		}
		return nil
	})
	if len(ev.Deliveries) != 2 {
		t.Fatalf("events show %s --json: deliveries = %+v, want crm and strict", id, ev.Deliveries)
	}
	c, s := ev.Deliveries[0], ev.Deliveries[1]
	if c.Sink != "crm" || c.Route != "all-calls" || c.State != "delivered" || c.Attempts != 2 || !strings.Contains(c.LastError, "crm is starting") ||
		c.DeliveredAt == nil || c.FirstAttemptAt == nil || c.LastAttemptAt == nil || c.LastAttemptAt.Before(*c.FirstAttemptAt) {
		t.Errorf("crm's record = %+v, want delivered on the 2nd attempt, last error the 503's", c)
	}
	if len(c.Failures) != 1 || c.Failures[0].Attempt != 1 || !strings.Contains(c.Failures[0].Error, "crm is starting") || c.Failures[0].At.IsZero() {
		t.Errorf("crm's failures = %+v, want attempt 1 with the 503's error", c.Failures)
	}
	if s.Sink != "strict" || s.State != "dead" || s.Attempts != 1 || !strings.Contains(s.LastError, "unknown field callSid") || s.DeliveredAt != nil {
		t.Errorf("strict's record = %+v, want dead after 1 attempt with the receiver's reason", s)
	}

	table := d.CLI(t, "events", "show", id)
	for _, want := range []string{"deliveries:", "SINK", "LAST_ERROR", "crm", "delivered", "strict", "dead", "unknown field callSid"} {
		if !strings.Contains(table, want) {
			t.Errorf("events show %s lacks %q:\n%s", id, want, table)
		}
	}
	for _, tt := range []struct {
		sink, state string
		listed      bool
	}{
		{"crm", "delivered", true},
		{"crm", "dead", false},
		{"strict", "dead", true},
		{"strict", "pending", false},
	} {
		if out := d.CLI(t, "events", "list", "--sink", tt.sink, "--state", tt.state); strings.Contains(out, id) != tt.listed {
			t.Errorf("events list --sink %s --state %s lists %s = %v, want %v:\n%s", tt.sink, tt.state, id, !tt.listed, tt.listed, out)
		}
	}
}

// logLine returns the first line of log that contains msg.
func logLine(log, msg string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, msg) {
			return l
		}
	}
	return ""
}
