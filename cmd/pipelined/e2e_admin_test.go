package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOperatorPushesStuckEventsThrough plays an operator's hour: a sink
// refuses events (they land in its DLQ), the operator sees it in `pipelined
// sinks` and in /metrics, fixes the receiver, retries the DLQ, and replays a
// time range to the sink.
func TestOperatorPushesStuckEventsThrough(t *testing.T) {
	var refusing atomic.Bool
	refusing.Store(true)
	var mu sync.Mutex
	got := map[string]int{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refusing.Load() {
			w.WriteHeader(http.StatusUnprocessableEntity)
			io.WriteString(w, "crm is in maintenance")
			return
		}
		mu.Lock()
		got[r.Header.Get("webhook-id")]++
		mu.Unlock()
	}))
	defer recv.Close()
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}

	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms" }

[[route]]
name = "all-calls"
when = 'body.event == "call_ended"'
to = ["crm"]
`, recv.URL))
	d := startDaemon(t, cfgFile)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(binDir, "pipelined"), append(args, "--admin", d.admin)...).CombinedOutput()
		if err != nil {
			t.Fatalf("pipelined %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	var ids []string
	for i := range 5 {
		code, ans, err := post(t, d.url+"/hooks/callkaro", "application/json", callEvent(t, fmt.Sprint("ops-", i), "interested"))
		if err != nil || code != 200 {
			t.Fatalf("POST = %d %v %v", code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}
	// 422 is permanent: every event goes to the DLQ with the receiver's reason.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(cli("dlq", "list", "crm"), ids[4]) {
		if time.Now().After(deadline) {
			t.Fatalf("the refused events never reached the DLQ:\n%s", cli("sinks"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := cli("dlq", "list", "crm", "--json"); !strings.Contains(out, "crm is in maintenance") {
		t.Errorf("dlq list --json does not show the receiver's reason:\n%s", out)
	}
	if out := cli("sinks"); !strings.Contains(out, "crm") || !strings.Contains(out, "5") {
		t.Errorf("pipelined sinks does not show crm's 5 dead letters:\n%s", out)
	}
	resp, err := client.Get(d.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`pipelined_deliveries_total{outcome="dead",sink="crm"} 5`, `pipelined_dead_letters{sink="crm"} 5`, `pipelined_ingest_requests_total{outcome="accepted",source="callkaro"} 5`} {
		if !strings.Contains(string(metricsText), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The receiver is fixed: retry the DLQ.
	refusing.Store(false)
	cli("dlq", "retry", "crm", "--all")
	for received() < len(ids) {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("after dlq retry the receiver got %d of %d events", received(), len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A replay sends the last hour again, with the same event ids.
	out := cli("replay", "--sink", "crm", "--since", "1h")
	if !strings.Contains(out, "5") {
		t.Errorf("replay output does not count 5 events:\n%s", out)
	}
	for {
		mu.Lock()
		twice := 0
		for _, id := range ids {
			if got[id] >= 2 {
				twice++
			}
		}
		mu.Unlock()
		if twice == len(ids) {
			break
		}
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatalf("after replay only %d of %d events arrived again", twice, len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
