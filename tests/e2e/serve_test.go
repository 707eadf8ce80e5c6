package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// callKaroHeader is the start of a test configuration: both listeners on
// free loopback ports, the Badger log in logDir, and the CallKaro source
// without authentication, deduplicated by callSid.
func callKaroHeader(logDir string) string {
	return harness.Listeners("") + harness.BadgerLog(logDir) + harness.CallKaroSource
}

// testConfig is a pipeline.toml with two archive sinks under dir: every call
// goes to "archive", interested leads also to "leads".
func testConfig(dir string) string {
	return harness.Listeners(`max_body = "64KiB"`) + harness.BadgerLog(filepath.Join(dir, "log")) + harness.CallKaroSource + fmt.Sprintf(`
[[sink]]
name = "archive"
plugin = "archive"
config = { dir = %q }
delivery = { batch_max = 100, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "200ms" }

[[sink]]
name = "leads"
plugin = "archive"
config = { dir = %q, prefix = "leads" }
delivery = { batch_max = 100, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "200ms" }
`, filepath.Join(dir, "archive"), filepath.Join(dir, "leads")) + harness.AllCallsRoute("archive") + harness.InterestedRoute("leads") +
		`transform = '{"text": "Interested lead from " + body.data.from, "call": body.data.callSid}'
`
}

// queuesEmpty waits until no sink of d has an event ready or retrying:
// every delivery has been settled, so none can arrive later.
func queuesEmpty(t *testing.T, d *harness.Daemon, within time.Duration) {
	t.Helper()
	harness.Eventually(t, within, func() error {
		for name, s := range d.Sinks(t) {
			if s.Ready+s.Retrying != 0 {
				return fmt.Errorf("sink %s has %d events ready and %d retrying", name, s.Ready, s.Retrying)
			}
		}
		return nil
	})
}

func TestServeDeliversOnceAndAnswersDuplicates(t *testing.T) {
	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, testConfig(dir)))
	hook := d.URL + "/hooks/callkaro"
	body := harness.CallEvent("sid-dup-1", "interested")

	code, first, err := harness.Post(hook, body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("first POST = %d %v %v, want 200", code, first, err)
	}
	id, _ := first["id"].(string)
	if id == "" || first["duplicate"] != false {
		t.Fatalf("first POST answered %v, want an id and duplicate=false", first)
	}
	code, second, err := harness.Post(hook, body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("second POST = %d %v %v, want 200", code, second, err)
	}
	if second["id"] != id || second["duplicate"] != true {
		t.Fatalf("second POST answered %v, want id %s and duplicate=true", second, id)
	}

	harness.WaitArchived(t, filepath.Join(dir, "archive"), []string{id}, 20*time.Second)
	harness.WaitArchived(t, filepath.Join(dir, "leads"), []string{id}, 20*time.Second)
	// Once both queues are empty, no second delivery can come.
	queuesEmpty(t, d, 20*time.Second)
	all, leads := harness.Archived(filepath.Join(dir, "archive")), harness.Archived(filepath.Join(dir, "leads"))
	if n := len(all[id]); n != 1 {
		t.Errorf("archive holds event %s %d times, want once", id, n)
	}
	if n := len(leads[id]); n != 1 {
		t.Fatalf("leads archive holds event %s %d times, want once", id, n)
	}
	rec := all[id][0]
	if rec["source"] != "callkaro" || rec["route"] != "all-calls" {
		t.Errorf("archived record source=%v route=%v, want callkaro, all-calls", rec["source"], rec["route"])
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["received_at"])); err != nil {
		t.Errorf("received_at %v is not RFC 3339: %v", rec["received_at"], err)
	}
	var sent, got any
	json.Unmarshal(body, &sent)
	got = rec["body"]
	if fmt.Sprint(sent) != fmt.Sprint(got) {
		t.Errorf("archived body = %v, want the posted body %v", got, sent)
	}
	payload, _ := leads[id][0]["payload"].(map[string]any)
	if payload["text"] != "Interested lead from 919876543210" || payload["call"] != "sid-dup-1" {
		t.Errorf("leads payload = %v, want the route's transform output", leads[id][0]["payload"])
	}
}

func TestServeFansOutConcurrentEvents(t *testing.T) {
	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, testConfig(dir)))
	hook := d.URL + "/hooks/callkaro"

	const clients, perClient = 12, 25
	var mu sync.Mutex
	var all, interested []string
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range perClient {
				lead := "not_interested"
				if i%3 == 0 {
					lead = "interested"
				}
				code, ans, err := harness.Post(hook, harness.CallEvent(fmt.Sprintf("fan-%d-%d", c, i), lead))
				id, _ := ans["id"].(string)
				if err != nil || code != http.StatusOK || ans["duplicate"] != false || id == "" {
					t.Errorf("POST = %d %v %v, want 200 with an id, duplicate=false", code, ans, err)
					return
				}
				mu.Lock()
				all = append(all, id)
				if lead == "interested" {
					interested = append(interested, id)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	gotAll := harness.WaitArchived(t, filepath.Join(dir, "archive"), all, 30*time.Second)
	gotLeads := harness.WaitArchived(t, filepath.Join(dir, "leads"), interested, 30*time.Second)
	if len(gotAll) != clients*perClient {
		t.Errorf("archive holds %d events, want %d", len(gotAll), clients*perClient)
	}
	if len(gotLeads) != len(interested) {
		t.Errorf("leads archive holds %d events, want the %d interested ones", len(gotLeads), len(interested))
	}
	for id, recs := range gotAll {
		if len(recs) != 1 {
			t.Errorf("event %s archived %d times, want once", id, len(recs))
		}
	}
}

func TestServeAnswersBadRequestsClearly(t *testing.T) {
	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, testConfig(dir)))
	hook := d.URL + "/hooks/callkaro"
	tests := []struct {
		name        string
		method, url string
		contentType string
		body        []byte
		want        int
		wantErr     string
	}{
		{"malformed JSON", "POST", hook, "application/json", []byte(`{"event": "call_ended",`), 400, "not valid JSON"},
		{"unknown path", "POST", d.URL + "/hooks/nope", "application/json", []byte(`{}`), 404, "no source"},
		{"wrong method", "GET", hook, "", nil, 405, "POST"},
		{"body too large", "POST", hook, "application/json", []byte(`{"pad":"` + strings.Repeat("x", 70<<10) + `"}`), 413, "larger than the limit"},
		{"not JSON content type", "POST", hook, "text/plain", []byte(`{}`), 415, "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, tt.url, bytes.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := harness.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var ans struct{ Error string }
			raw, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(raw, &ans); err != nil {
				t.Fatalf("answer %q is not JSON: %v", raw, err)
			}
			if resp.StatusCode != tt.want || !strings.Contains(ans.Error, tt.wantErr) {
				t.Errorf("%s %s = %d %q, want %d with an error mentioning %q", tt.method, tt.url, resp.StatusCode, ans.Error, tt.want, tt.wantErr)
			}
			if bytes.Count(bytes.TrimSpace(raw), []byte("\n")) != 0 {
				t.Errorf("error body %q is more than one line", raw)
			}
		})
	}
	// Nothing of that reached a sink: a good event posted after them is
	// delivered, and alone.
	code, ans, err := harness.Post(hook, harness.CallEvent("after-bad-requests", "not_interested"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST after the bad requests = %d %v %v, want 200", code, ans, err)
	}
	id, _ := ans["id"].(string)
	harness.WaitArchived(t, filepath.Join(dir, "archive"), []string{id}, 20*time.Second)
	queuesEmpty(t, d, 20*time.Second)
	if got := harness.Archived(filepath.Join(dir, "archive")); len(got) != 1 {
		t.Errorf("archive holds %d events after bad requests and one good one, want only %s", len(got), id)
	}
}

// interested routes every event of a load to both archives.
func interested(c, i int) string { return "interested" }

func TestServeLosesNothingAcknowledgedOnSIGKILL(t *testing.T) {
	dir := t.TempDir()
	cfg := harness.WriteConfig(t, dir, testConfig(dir))
	d := harness.Start(t, cfg)

	l := harness.StartLoad(t, harness.LoadOptions{Clients: 16, Prefix: "crash", Lead: interested}, d.URL)
	l.WaitCount(t, 50, 30*time.Second) // mid-burst, with a real burst behind
	pluginPID := d.SinkPID(t, "archive")
	d.Kill(syscall.SIGKILL)
	acked := harness.IDs(l.Finish())

	// The plugin does not outlive the daemon.
	if err := harness.WaitFor(5*time.Second, func() error {
		if syscall.Kill(pluginPID, 0) == nil {
			return fmt.Errorf("archive plugin (pid %d) still runs after its daemon was killed", pluginPID)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	d2 := harness.Start(t, cfg)
	got := harness.WaitArchived(t, filepath.Join(dir, "archive"), acked, 60*time.Second)
	harness.WaitArchived(t, filepath.Join(dir, "leads"), acked, 60*time.Second)
	dups := 0
	for _, id := range acked {
		dups += len(got[id]) - 1
	}
	t.Logf("%d events acknowledged before SIGKILL, all delivered after restart (%d redelivered twice)", len(acked), dups)

	// And the restarted daemon still dedups what was acknowledged before.
	code, ans, err := harness.Post(d2.URL+"/hooks/callkaro", harness.CallEvent("crash-0-0", "interested"))
	if err != nil || code != http.StatusOK || ans["duplicate"] != true {
		t.Errorf("re-POST of an event acknowledged before the kill = %d %v %v, want 200 duplicate=true", code, ans, err)
	}
}

func TestServeSurvivesPluginSIGKILL(t *testing.T) {
	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, testConfig(dir)))

	l := harness.StartLoad(t, harness.LoadOptions{Prefix: "plugin-crash", Lead: interested}, d.URL)
	killed := map[int]bool{}
	for range 3 {
		// Kill a running plugin under load: one the host started after
		// the last kill, with events acknowledged since.
		n := l.Count()
		var pid int
		harness.Eventually(t, 30*time.Second, func() error {
			pid = d.SinkPID(t, "archive")
			if pid == 0 || killed[pid] || l.Count() < n+20 {
				return fmt.Errorf("no new archive plugin running with 20 events acknowledged since the last kill (pid %d, killed %v, %d acked)", pid, killed, l.Count()-n)
			}
			return nil
		})
		killed[pid] = true
		syscall.Kill(pid, syscall.SIGKILL)
	}
	l.WaitCount(t, l.Count()+20, 30*time.Second) // ingest goes on after the last kill
	acked := harness.IDs(l.Finish())
	harness.WaitArchived(t, filepath.Join(dir, "archive"), acked, 60*time.Second)
	if pid := d.SinkPID(t, "archive"); killed[pid] {
		t.Errorf("archive plugin pid %d was killed, yet /v1/sinks still reports it", pid)
	}
	t.Logf("%d events acknowledged while the archive plugin was killed %d times; all delivered", len(acked), len(killed))
}

func TestServeStopsCleanlyOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, testConfig(dir)))
	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("term-1", "interested"))
	if err != nil || code != 200 {
		t.Fatalf("POST = %d %v %v", code, ans, err)
	}
	d.Kill(syscall.SIGTERM)
	if code := d.ExitCode(); code != 0 {
		t.Errorf("pipelined exited %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(d.Log(), "pipelined stopped") {
		t.Errorf("log lacks the clean stop message")
	}
	// A stop that waits for nothing past the grace says nothing of waits.
	for _, prefix := range []string{"shutting down: waiting", stopUnsettledMsg, "sink plugin did not"} {
		if got := logRecords(t, d, prefix); len(got) != 0 {
			t.Errorf("log lines %q after a quick stop = %v, want none", prefix, got)
		}
	}
}

// TestLoadGeneratorSmoke runs the load generator against the daemon for a
// moment: a few hundred requests, every one answered 2xx with an id (the
// generator exits non-zero otherwise), some of them duplicates.
func TestLoadGeneratorSmoke(t *testing.T) {
	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, testConfig(dir)))
	out, err := exec.Command(harness.Bin(t, "pipelined-load"), "run", "-url", d.URL+"/hooks/callkaro",
		"-c", "4", "-d", "1s", "-warmup", "0s", "-dup", "0.1", "-json").CombinedOutput()
	if err != nil {
		t.Fatalf("pipelined-load: %v\n%s", err, out)
	}
	var rep struct {
		Requests float64 `json:"requests_per_sec"`
		Errors   int     `json:"errors"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || rep.Requests <= 0 || rep.Errors != 0 {
		t.Fatalf("pipelined-load report %s (%v), want requests and no errors", out, err)
	}
}
