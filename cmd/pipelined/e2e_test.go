package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
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
)

// The end-to-end tests build the real binaries once and run `pipelined
// serve` as a process on loopback, with the real archive plugin next to it.

var binDir string // holds pipelined and pipelined-sink-archive

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pipelined-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for pkg, name := range map[string]string{
		".":                     "pipelined",
		"../../plugins/archive": "pipelined-sink-archive",
		"../../plugins/sql":     "pipelined-sink-sql",
		"../../plugins/slack":   "pipelined-sink-slack",
		"../../plugins/http":    "pipelined-sink-http",
		"../pipelined-load":     "pipelined-load",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", name, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// callKaro is the documented CallKaro call_ended payload (examples/callkaro).
func callKaro(t testing.TB) map[string]any {
	t.Helper()
	b, err := os.ReadFile("../../examples/callkaro/call_ended.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// callEvent returns a CallKaro payload with its own callSid and lead status.
func callEvent(t testing.TB, sid, lead string) []byte {
	m := callKaro(t)
	data := m["data"].(map[string]any)
	data["callSid"] = sid
	data["post_call"] = map[string]any{"lead_status": lead}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testConfig is a pipeline.toml with two archive sinks under dir: every call
// goes to "archive", interested leads also to "leads".
// callKaroHeader is the start of a test configuration: both listeners on
// free loopback ports, the Badger log in logDir, and the CallKaro source
// without authentication, deduplicated by callSid.
func callKaroHeader(logDir string) string {
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
dir = %q

[[source]]
name = "callkaro"
path = "/hooks/callkaro"
dedup_key = "body.data.callSid"
auth = { type = "none" }
`, logDir)
}

func testConfig(dir string) string {
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
max_body = "64KiB"

[admin]
listen = "127.0.0.1:0"

[log]
dir = %[1]q

[[source]]
name = "callkaro"
path = "/hooks/callkaro"
dedup_key = "body.data.callSid"
dedup_window = "24h"
auth = { type = "none" }

[[sink]]
name = "archive"
plugin = "archive"
config = { dir = %[2]q }
delivery = { batch_max = 100, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "200ms" }

[[sink]]
name = "leads"
plugin = "archive"
config = { dir = %[3]q, prefix = "leads" }
delivery = { batch_max = 100, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "200ms" }

[[route]]
name = "all-calls"
when = 'body.event == "call_ended"'
to = ["archive"]

[[route]]
name = "interested"
when = 'body.data?.post_call?.lead_status == "interested"'
to = ["leads"]
transform = '{"text": "Interested lead from " + body.data.from, "call": body.data.callSid}'
`, filepath.Join(dir, "log"), filepath.Join(dir, "archive"), filepath.Join(dir, "leads"))
}

// proc is a running `pipelined serve`.
type proc struct {
	cmd    *exec.Cmd
	url    string // ingest base URL
	admin  string // admin base URL
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
}

// startDaemon runs pipelined serve on the config file and waits until it is ready.
func startDaemon(t *testing.T, configFile string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "pipelined"), "serve", "-c", configFile, "-log-format", "json")
	cmd.Dir = filepath.Dir(configFile)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &proc{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			d.mu.Lock()
			d.stderr.Write(line)
			d.stderr.WriteByte('\n')
			d.mu.Unlock()
			var rec struct {
				Msg    string `json:"msg"`
				Ingest string `json:"ingest"`
				Admin  string `json:"admin"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "pipelined is ready" {
				ready <- [2]string{rec.Ingest, rec.Admin}
			}
		}
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("pipelined log:\n%s", d.log())
		}
	})
	select {
	case addrs := <-ready:
		d.url, d.admin = "http://"+addrs[0], "http://"+addrs[1]
	case <-d.exited:
		t.Fatalf("pipelined exited before it was ready:\n%s", d.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("pipelined not ready after 30s:\n%s", d.log())
	}
	return d
}

func (d *proc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// kill sends sig and waits for the process to exit.
func (d *proc) kill(sig syscall.Signal) {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

// post sends body to path and returns the status and decoded JSON answer.
func post(t testing.TB, url, contentType string, body []byte) (int, map[string]any, error) {
	resp, err := client.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, m, nil
}

// archived reads every line of every archive file (.jsonl and .jsonl.gz)
// under dir and returns them by event id.
func archived(t testing.TB, dir string) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl*"))
	for _, f := range files {
		if strings.HasSuffix(f, ".tmp") {
			continue
		}
		fh, err := os.Open(f)
		if err != nil {
			continue // compressed and removed meanwhile
		}
		var r io.Reader = fh
		if strings.HasSuffix(f, ".gz") {
			gz, err := gzip.NewReader(fh)
			if err != nil {
				fh.Close()
				continue
			}
			r = gz
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			var rec map[string]any
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				continue // a torn last line of a file being written
			}
			id, _ := rec["id"].(string)
			out[id] = append(out[id], rec)
		}
		fh.Close()
	}
	return out
}

// waitArchived waits until every id in want is in the archive under dir
// and returns the archive.
func waitArchived(t *testing.T, dir string, want []string, timeout time.Duration) map[string][]map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := archived(t, dir)
		var missing []string
		for _, id := range want {
			if len(got[id]) == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged events never reached %s, e.g. %v", len(missing), len(want), dir, missing[:min(5, len(missing))])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeConfig(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "pipeline.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeDeliversOnceAndAnswersDuplicates(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, writeConfig(t, dir, testConfig(dir)))
	hook := d.url + "/hooks/callkaro"
	body := callEvent(t, "sid-dup-1", "interested")

	code, first, err := post(t, hook, "application/json", body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("first POST = %d %v %v, want 200", code, first, err)
	}
	id, _ := first["id"].(string)
	if id == "" || first["duplicate"] != false {
		t.Fatalf("first POST answered %v, want an id and duplicate=false", first)
	}
	code, second, err := post(t, hook, "application/json", body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("second POST = %d %v %v, want 200", code, second, err)
	}
	if second["id"] != id || second["duplicate"] != true {
		t.Fatalf("second POST answered %v, want id %s and duplicate=true", second, id)
	}

	all := waitArchived(t, filepath.Join(dir, "archive"), []string{id}, 20*time.Second)
	leads := waitArchived(t, filepath.Join(dir, "leads"), []string{id}, 20*time.Second)
	time.Sleep(200 * time.Millisecond) // a second delivery, if there were one, would land now
	all, leads = archived(t, filepath.Join(dir, "archive")), archived(t, filepath.Join(dir, "leads"))
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
	d := startDaemon(t, writeConfig(t, dir, testConfig(dir)))
	hook := d.url + "/hooks/callkaro"

	const clients, perClient = 12, 25
	var mu sync.Mutex
	var all, interested []string
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perClient {
				lead := "not_interested"
				if i%3 == 0 {
					lead = "interested"
				}
				code, ans, err := post(t, hook, "application/json", callEvent(t, fmt.Sprintf("fan-%d-%d", c, i), lead))
				if err != nil || code != http.StatusOK || ans["duplicate"] != false {
					t.Errorf("POST = %d %v %v, want 200 duplicate=false", code, ans, err)
					return
				}
				mu.Lock()
				all = append(all, ans["id"].(string))
				if lead == "interested" {
					interested = append(interested, ans["id"].(string))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	gotAll := waitArchived(t, filepath.Join(dir, "archive"), all, 30*time.Second)
	gotLeads := waitArchived(t, filepath.Join(dir, "leads"), interested, 30*time.Second)
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
	d := startDaemon(t, writeConfig(t, dir, testConfig(dir)))
	hook := d.url + "/hooks/callkaro"
	tests := []struct {
		name        string
		method, url string
		contentType string
		body        []byte
		want        int
		wantErr     string
	}{
		{"malformed JSON", "POST", hook, "application/json", []byte(`{"event": "call_ended",`), 400, "not valid JSON"},
		{"unknown path", "POST", d.url + "/hooks/nope", "application/json", []byte(`{}`), 404, "no source"},
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
			resp, err := client.Do(req)
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
	// Nothing of that reached a sink.
	time.Sleep(200 * time.Millisecond)
	if n := len(archived(t, filepath.Join(dir, "archive"))); n != 0 {
		t.Errorf("archive holds %d events after only bad requests, want 0", n)
	}
}

// burst posts distinct events from several clients until stop is closed and
// returns the ids that were acknowledged with a 2xx.
func burst(t *testing.T, url, prefix string, clients int, stop <-chan struct{}) func() []string {
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, ans, err := post(t, url, "application/json", callEvent(t, fmt.Sprintf("%s-%d-%d", prefix, c, i), "interested"))
				if err != nil {
					time.Sleep(10 * time.Millisecond) // the proc is down: keep trying until stopped
					continue
				}
				if code == http.StatusOK {
					mu.Lock()
					acked = append(acked, ans["id"].(string))
					mu.Unlock()
				}
			}
		}()
	}
	return func() []string {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return acked
	}
}

func TestServeLosesNothingAcknowledgedOnSIGKILL(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, testConfig(dir))
	d := startDaemon(t, cfg)

	stop := make(chan struct{})
	wait := burst(t, d.url+"/hooks/callkaro", "crash", 16, stop)
	time.Sleep(700 * time.Millisecond) // mid-burst
	pluginPID := sinkPID(t, d, "archive")
	d.kill(syscall.SIGKILL)
	close(stop)
	acked := wait()
	if len(acked) < 50 {
		t.Fatalf("only %d events acknowledged before the kill; the test needs a real burst", len(acked))
	}

	// The plugin does not outlive the daemon.
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pluginPID, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("archive plugin (pid %d) still runs 5s after its daemon was killed", pluginPID)
			break
		}
	}

	d2 := startDaemon(t, cfg)
	got := waitArchived(t, filepath.Join(dir, "archive"), acked, 60*time.Second)
	waitArchived(t, filepath.Join(dir, "leads"), acked, 60*time.Second)
	dups := 0
	for _, id := range acked {
		dups += len(got[id]) - 1
	}
	t.Logf("%d events acknowledged before SIGKILL, all delivered after restart (%d redelivered twice)", len(acked), dups)

	// And the restarted proc still dedups what was acknowledged before.
	code, ans, err := post(t, d2.url+"/hooks/callkaro", "application/json", callEvent(t, "crash-0-0", "interested"))
	if err != nil || code != http.StatusOK || ans["duplicate"] != true {
		t.Errorf("re-POST of an event acknowledged before the kill = %d %v %v, want 200 duplicate=true", code, ans, err)
	}
}

// sinkPID asks the admin API for the pid of a sink's plugin.
func sinkPID(t *testing.T, d *proc, sink string) int {
	t.Helper()
	resp, err := client.Get(d.admin + "/v1/sinks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Sinks []struct {
			Name   string
			Plugin string
			PID    int
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Sinks {
		if s.Name == sink {
			return s.PID
		}
	}
	t.Fatalf("no sink %s in /v1/sinks", sink)
	return 0
}

func TestServeSurvivesPluginSIGKILL(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, writeConfig(t, dir, testConfig(dir)))

	stop := make(chan struct{})
	wait := burst(t, d.url+"/hooks/callkaro", "plugin-crash", 8, stop)
	pids := map[int]bool{}
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		pid := sinkPID(t, d, "archive")
		if pid == 0 {
			continue // restarting
		}
		pids[pid] = true
		syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	acked := wait()
	if len(pids) < 2 {
		t.Errorf("killed plugin pids %v; want the host to have restarted it between kills", pids)
	}
	waitArchived(t, filepath.Join(dir, "archive"), acked, 60*time.Second)
	t.Logf("%d events acknowledged while the archive plugin was killed %d times; all delivered", len(acked), len(pids))
}

func TestServeStopsCleanlyOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, writeConfig(t, dir, testConfig(dir)))
	code, ans, err := post(t, d.url+"/hooks/callkaro", "application/json", callEvent(t, "term-1", "interested"))
	if err != nil || code != 200 {
		t.Fatalf("POST = %d %v %v", code, ans, err)
	}
	d.kill(syscall.SIGTERM)
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("pipelined exited %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(d.log(), "pipelined stopped") {
		t.Errorf("log lacks the clean stop message")
	}
}

// TestLoadGeneratorSmoke runs the load generator against the daemon for a
// moment: a few hundred requests, every one answered 2xx with an id (the
// generator exits non-zero otherwise), some of them duplicates.
func TestLoadGeneratorSmoke(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, writeConfig(t, dir, testConfig(dir)))
	out, err := exec.Command(filepath.Join(binDir, "pipelined-load"), "run", "-url", d.url+"/hooks/callkaro",
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
