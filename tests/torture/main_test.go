// Package torture drives the real pipelined binaries on loopback through
// crashes, outages, full disks and hostile clients, and proves that every
// event acknowledged with a 2xx reached every sink its routes name.
//
// The default is a short run for CI (a few kills, small counts);
// -torture.full (or PIPELINED_TORTURE=full) runs the full counts of the
// issue (20 kills, a 60 s outage). -torture.report=FILE writes the summary
// table as Markdown (docs/reliability.md).
package torture

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

var (
	fullFlag   = flag.Bool("torture.full", false, "run the full counts (20 kills, 60 s outage) instead of the short CI version")
	reportFlag = flag.String("torture.report", "", "write the summary table as Markdown to this file")
)

func full() bool { return *fullFlag || os.Getenv("PIPELINED_TORTURE") == "full" }

// scale returns short in the CI version and long in the full one.
func scale[T any](short, long T) T {
	if full() {
		return long
	}
	return short
}

var binDir string // pipelined and pipelined-sink-*

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "pipelined-torture-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for pkg, name := range map[string]string{
		"../../cmd/pipelined":   "pipelined",
		"../../plugins/archive": "pipelined-sink-archive",
		"../../plugins/sql":     "pipelined-sink-sql",
		"../../plugins/http":    "pipelined-sink-http",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", name, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	start := time.Now()
	code := m.Run()
	printSummary(time.Since(start))
	os.RemoveAll(dir)
	os.Exit(code)
}

// ---- the summary table ----

type row struct {
	Scenario   string
	Acked      int
	Delivered  int
	Duplicates int
	Lost       int
	Recover    string // time to recover, e.g. "restart p50 310ms, max 520ms"
	MemPeak    string // daemon VmHWM / RssAnon peak
	Note       string
}

var (
	rowsMu sync.Mutex
	rows   []row
)

func addRow(t *testing.T, r row) {
	t.Helper()
	t.Logf("summary: %+v", r)
	rowsMu.Lock()
	rows = append(rows, r)
	rowsMu.Unlock()
}

func table() string {
	var b strings.Builder
	b.WriteString("| scenario | acknowledged | delivered | duplicates | lost | time to recover | daemon memory peak (VmHWM / RssAnon) | notes |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %s | %s |\n", r.Scenario, r.Acked, r.Delivered, r.Duplicates, r.Lost, r.Recover, r.MemPeak, r.Note)
	}
	return b.String()
}

func printSummary(took time.Duration) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return
	}
	mode := "short (CI) run"
	if full() {
		mode = "FULL run"
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			mem = strings.Join(strings.Fields(line)[1:], " ")
		}
	}
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	machine := fmt.Sprintf("%s, %d CPUs, MemTotal %s, Linux %s, %s", host, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)), runtime.Version())
	tbl := table()
	fmt.Printf("\n== pipelined torture summary (%s, %v) ==\n%s\n", mode, took.Round(time.Second), tbl)
	if *reportFlag == "" {
		return
	}
	doc := fmt.Sprintf(`# Reliability: the torture suite

`+"`make torture`"+` (full) and `+"`make torture-short`"+` (CI) run tests/torture: the real binaries on
loopback, CallKaro events from concurrent clients, every id answered 2xx recorded, and at the end
every acknowledged id looked up in every sink its routes name (archive files, SQLite rows, a local
HTTP receiver behind the http sink). Duplicates (at-least-once redeliveries) are counted
separately; "lost" must be 0. Memory is the daemon's VmHWM / peak sampled RssAnon from
/proc/PID/status (the highest over every daemon process of the scenario).

- Run: %s, %s, took %v
- Date: %s
- Machine: %s

%s
Scenario details are in the test log (`+"`go test -v ./tests/torture`"+`): kill moments, restart
times, the measured retry schedule, the status of each hostile request.
`, mode, "`go test ./tests/torture`", took.Round(time.Second), time.Now().UTC().Format(time.RFC3339), machine, tbl)
	// What people wrote below the generated part (findings, fixes) stays.
	if old, err := os.ReadFile(*reportFlag); err == nil {
		if _, notes, ok := strings.Cut(string(old), reportEnd); ok {
			doc += "\n" + reportEnd + notes
		}
	}
	if err := os.WriteFile(*reportFlag, []byte(doc), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "write report:", err)
	}
}

// reportEnd ends the generated part of the report; the text after it is
// kept when the report is written again.
const reportEnd = "<!-- The text above is written by make torture; the text below is kept. -->\n"

// ---- the daemon ----

type proc struct {
	cmd    *exec.Cmd
	url    string // ingest base URL
	admin  string // admin base URL
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
	ready  time.Duration // from start to "pipelined is ready"
}

// startDaemon runs pipelined serve on configFile and waits until it is ready.
func startDaemon(t *testing.T, configFile string) *proc {
	t.Helper()
	d, err := tryStartDaemon(t, configFile)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func tryStartDaemon(t *testing.T, configFile string) (*proc, error) {
	start := time.Now()
	cmd := exec.Command(filepath.Join(binDir, "pipelined"), "serve", "-c", configFile, "-log-format", "json")
	cmd.Dir = filepath.Dir(configFile)
	cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &proc{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			d.mu.Lock()
			if d.stderr.Len() < 8<<20 {
				d.stderr.Write(line)
				d.stderr.WriteByte('\n')
			}
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
		io.Copy(io.Discard, pr)
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.kill(syscall.SIGKILL)
		if t.Failed() {
			log := d.log()
			if len(log) > 20000 {
				log = "…" + log[len(log)-20000:]
			}
			t.Logf("pipelined (pid %d) log:\n%s", d.cmd.Process.Pid, log)
		}
	})
	select {
	case addrs := <-ready:
		d.url, d.admin = "http://"+addrs[0], "http://"+addrs[1]
		d.ready = time.Since(start)
		return d, nil
	case <-d.exited:
		return d, fmt.Errorf("pipelined exited before it was ready:\n%s", d.log())
	case <-time.After(60 * time.Second):
		return d, fmt.Errorf("pipelined not ready after 60s:\n%s", d.log())
	}
}

func (d *proc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

func (d *proc) pid() int { return d.cmd.Process.Pid }

func (d *proc) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// kill sends sig and waits for the process to exit.
func (d *proc) kill(sig syscall.Signal) {
	if !d.alive() {
		return
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

func (d *proc) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "pipelined"), append(args, "--admin", d.admin)...).CombinedOutput()
	if err != nil {
		t.Fatalf("pipelined %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ---- memory ----

// memWatch samples VmHWM and RssAnon of the daemon processes it is given.
type memWatch struct {
	hwm, anon atomic.Int64 // kB
	mu        sync.Mutex
	pids      map[int]bool
	stop      chan struct{}
	done      chan struct{}
}

func newMemWatch(t *testing.T) *memWatch {
	m := &memWatch{pids: map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
			m.mu.Lock()
			for pid := range m.pids {
				m.sample(pid)
			}
			m.mu.Unlock()
		}
	}()
	t.Cleanup(m.close)
	return m
}

func (m *memWatch) watch(pid int) {
	m.mu.Lock()
	m.pids[pid] = true
	m.mu.Unlock()
}

// forget takes a last sample of pid (VmHWM is the process's own peak) and
// stops watching it. Call it before killing the process.
func (m *memWatch) forget(pid int) {
	m.mu.Lock()
	m.sample(pid)
	delete(m.pids, pid)
	m.mu.Unlock()
}

func (m *memWatch) sample(pid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmHWM":
			storeMax(&m.hwm, n)
		case "RssAnon":
			storeMax(&m.anon, n)
		}
	}
}

func storeMax(a *atomic.Int64, n int64) {
	for {
		old := a.Load()
		if n <= old || a.CompareAndSwap(old, n) {
			return
		}
	}
}

func (m *memWatch) close() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
		<-m.done
	}
}

func (m *memWatch) String() string {
	m.mu.Lock()
	for pid := range m.pids {
		m.sample(pid)
	}
	m.mu.Unlock()
	return fmt.Sprintf("%d / %d MiB", m.hwm.Load()>>10, m.anon.Load()>>10)
}

// ---- events ----

var callKaro = func() map[string]any {
	b, err := os.ReadFile("../../examples/callkaro/call_ended.json")
	if err != nil {
		panic(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	return m
}()

var bodyMu sync.Mutex

// callEvent returns a CallKaro payload with its own callSid and lead status.
func callEvent(sid, lead string) []byte {
	bodyMu.Lock()
	defer bodyMu.Unlock()
	data := callKaro["data"].(map[string]any)
	data["callSid"] = sid
	data["post_call"] = map[string]any{"lead_status": lead}
	b, err := json.Marshal(callKaro)
	if err != nil {
		panic(err)
	}
	return b
}

var client = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0},
}

// post sends body and returns the status and decoded JSON answer.
func post(url string, body []byte) (int, map[string]any, error) {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
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

// acked is an event answered 2xx, with the sinks its routes name.
type acked struct {
	id    string
	sid   string
	sinks []string
}

// load posts distinct CallKaro events from concurrent clients to whatever
// URL target holds (it changes when the daemon restarts) and records every
// id answered 2xx with duplicate=false.
type load struct {
	target   atomic.Pointer[string]
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	acked    []acked
	statuses map[int]int
	errors   int
	// sinksOf gives the sinks an event with that lead status is routed to.
	sinksOf func(lead string) []string
	// leadOf chooses the lead status of the i-th event of a client.
	leadOf func(c, i int) string
	pause  atomic.Int64 // nanoseconds each client waits after a 2xx
}

func startLoad(t *testing.T, url, prefix string, clients int, sinksOf func(string) []string) *load {
	l := &load{stop: make(chan struct{}), statuses: map[int]int{}, sinksOf: sinksOf}
	l.leadOf = func(c, i int) string {
		if (c+i)%3 == 0 {
			return "interested"
		}
		return "not_interested"
	}
	l.setTarget(url)
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				sid := fmt.Sprintf("%s-%d-%d", prefix, c, i)
				lead := l.leadOf(c, i)
				code, ans, err := post(*l.target.Load(), callEvent(sid, lead))
				l.mu.Lock()
				if err != nil {
					l.errors++
				} else {
					l.statuses[code]++
				}
				if err == nil && code/100 == 2 {
					if ans["duplicate"] == true {
						l.mu.Unlock()
						t.Errorf("event %s, posted once, was answered duplicate=true: %v", sid, ans)
						continue
					}
					l.acked = append(l.acked, acked{id: ans["id"].(string), sid: sid, sinks: l.sinksOf(lead)})
				}
				l.mu.Unlock()
				if err != nil || code/100 != 2 {
					time.Sleep(10 * time.Millisecond) // the daemon is down or refusing: keep trying
				} else if p := time.Duration(l.pause.Load()); p > 0 {
					time.Sleep(p)
				}
			}
		}()
	}
	t.Cleanup(func() { l.finish() })
	return l
}

func (l *load) setTarget(url string) { l.target.Store(&url) }

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// snapshot returns the events acknowledged so far.
func (l *load) snapshot() []acked {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]acked(nil), l.acked...)
}

// finish stops the clients and returns every acknowledged event.
func (l *load) finish() []acked {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	return l.snapshot()
}

func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var codes []int
	for c := range l.statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", l.statuses[c], c))
	}
	return fmt.Sprintf("answers %s, %d connection errors", strings.Join(parts, " "), l.errors)
}

// ---- sinks ----

// receiver is the local HTTP endpoint of the http sink. It counts each
// webhook-id it accepted and the time of every attempt.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	ok  map[string]int
	// attempts holds the time of every request per webhook-id.
	attempts map[string][]time.Time
	// answer, when set, chooses the status of a request (0: 200).
	answer atomic.Pointer[func(id string, body []byte) int]
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{ok: map[string]int{}, attempts: map[string][]time.Time{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id := req.Header.Get("webhook-id")
		code := 200
		if f := r.answer.Load(); f != nil {
			code = (*f)(id, body)
		}
		r.mu.Lock()
		r.attempts[id] = append(r.attempts[id], time.Now())
		if code/100 == 2 {
			r.ok[id]++
		}
		r.mu.Unlock()
		if code/100 != 2 {
			w.WriteHeader(code)
			fmt.Fprintf(w, "torture receiver answers %d", code)
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setAnswer(f func(id string, body []byte) int) { r.answer.Store(&f) }

func (r *receiver) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.ok))
	for k, v := range r.ok {
		out[k] = v
	}
	return out
}

// archived reads every line of every archive file (.jsonl and .jsonl.gz)
// under dir and counts them by event id.
func archived(dir string) map[string]int {
	out := map[string]int{}
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
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var rec struct{ ID string }
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				continue // a torn last line of a file being written
			}
			out[rec.ID]++
		}
		fh.Close()
	}
	return out
}

// sqlRows counts the rows of table events by id (the sql sink inserts
// with ON CONFLICT DO NOTHING: a redelivery never shows as a second row).
func sqlRows(path string) map[string]int {
	out := map[string]int{}
	if _, err := os.Stat(path); err != nil {
		return out
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return out
	}
	defer db.Close()
	rs, err := db.Query(`SELECT id FROM events`)
	if err != nil {
		return out
	}
	defer rs.Close()
	for rs.Next() {
		var id string
		if rs.Scan(&id) == nil {
			out[id]++
		}
	}
	return out
}

// world is a daemon's sinks: where each one's deliveries can be counted.
type world struct {
	dir     string
	recv    *receiver
	archive string // archive sink directory
	db      string // SQLite file
}

func newWorld(t *testing.T) *world {
	dir := t.TempDir()
	return &world{dir: dir, recv: newReceiver(t), archive: filepath.Join(dir, "archive"), db: filepath.Join(dir, "events.db")}
}

// delivered counts deliveries per sink name ("archive", "db", "crm").
func (w *world) delivered() map[string]map[string]int {
	return map[string]map[string]int{
		"archive": archived(w.archive),
		"db":      sqlRows(w.db),
		"crm":     w.recv.counts(),
	}
}

// standardSinks: every call to the archive and the database, interested
// leads also to the CRM (the http sink).
func standardSinks(lead string) []string {
	if lead == "interested" {
		return []string{"archive", "db", "crm"}
	}
	return []string{"archive", "db"}
}

type configOpts struct {
	logDir      string
	archiveSize string // archive max_size (small: rotations under load)
	crmDelivery string // the crm sink's delivery table
	extraRoutes string
	server      string // extra [server] keys
}

func (w *world) config(o configOpts) string {
	if o.logDir == "" {
		o.logDir = filepath.Join(w.dir, "log")
	}
	if o.archiveSize == "" {
		o.archiveSize = "256KiB"
	}
	if o.crmDelivery == "" {
		o.crmDelivery = `{ batch_max = 100, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "500ms", max_attempts = 1000 }`
	}
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
max_body = "1MiB"
%[7]s

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
config = { dir = %[2]q, max_size = %[4]q, compress = "gzip" }
delivery = { batch_max = 200, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "500ms", max_attempts = 1000 }

[[sink]]
name = "db"
plugin = "sql"
config = { driver = "sqlite", path = %[3]q, columns = { call_sid = "data.callSid" } }
delivery = { batch_max = 200, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "500ms", max_attempts = 1000 }

[[sink]]
name = "crm"
plugin = "http"
config = { url = %[5]q, timeout = "5s" }
delivery = %[6]s

[[route]]
name = "all-calls"
when = 'body.event == "call_ended"'
to = ["archive", "db"]

[[route]]
name = "interested"
when = 'body.data?.post_call?.lead_status == "interested"'
to = ["crm"]
%[8]s
`, o.logDir, w.archive, w.db, o.archiveSize, w.recv.srv.URL+"/in", o.crmDelivery, o.server, o.extraRoutes)
}

func writeConfig(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "pipeline.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// proof is the outcome of checking acknowledged events against the sinks.
type proof struct {
	acked, delivered, duplicates, lost int
	missing                            map[string][]string // sink → ids
}

// prove waits up to timeout until every acknowledged event is in every sink
// its routes name, and counts duplicates (extra copies in the archive and at
// the receiver; SQLite absorbs them by design).
func (w *world) prove(t *testing.T, events []acked, timeout time.Duration) proof {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := w.delivered()
		p := proof{acked: len(events), missing: map[string][]string{}}
		for _, e := range events {
			ok := true
			for _, s := range e.sinks {
				n := got[s][e.id]
				if n == 0 {
					ok = false
					p.missing[s] = append(p.missing[s], e.id)
				} else {
					p.duplicates += n - 1
				}
			}
			if ok {
				p.delivered++
			} else {
				p.lost++
			}
		}
		if p.lost == 0 || time.Now().After(deadline) {
			for s, ids := range p.missing {
				t.Errorf("%d acknowledged events never reached sink %s, e.g. %v", len(ids), s, ids[:min(5, len(ids))])
			}
			return p
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ---- admin API ----

type sinkStatus struct {
	Name      string `json:"name"`
	Plugin    string `json:"plugin"`
	PID       int    `json:"pid"`
	LastError string `json:"last_error"`
	Ready     int    `json:"ready"`
	Retrying  int    `json:"retrying"`
	Dead      int    `json:"dead"`
}

func sinks(t *testing.T, d *proc) map[string]sinkStatus {
	t.Helper()
	resp, err := client.Get(d.admin + "/v1/sinks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Sinks []sinkStatus }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	out := map[string]sinkStatus{}
	for _, s := range st.Sinks {
		out[s.Name] = s
	}
	return out
}

type deadLetter struct {
	ID       string `json:"id"`
	Route    string `json:"route"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

// dlq lists every dead letter of sink.
func dlq(t *testing.T, d *proc, sink string) []deadLetter {
	t.Helper()
	var out []deadLetter
	next := ""
	for {
		u := d.admin + "/v1/sinks/" + sink + "/dlq?limit=1000"
		if next != "" {
			u += "&after=" + next
		}
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			DeadLetters []deadLetter `json:"dead_letters"`
			Next        string       `json:"next"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.DeadLetters...)
		if page.Next == "" || len(page.DeadLetters) == 0 {
			return out
		}
		next = page.Next
	}
}

// eventExists asks the admin API whether the log holds event id.
func eventExists(d *proc, id string) (bool, error) {
	resp, err := client.Get(d.admin + "/v1/events/" + id)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case 200:
		return true, nil
	case 404:
		return false, nil
	}
	return false, fmt.Errorf("GET /v1/events/%s: %d", id, resp.StatusCode)
}

// ---- small things ----

func jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Int64N(int64(hi-lo)+1))
}

func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("p50 %v, max %v (n=%d)", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }
