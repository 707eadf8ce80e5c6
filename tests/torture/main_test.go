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
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/tests/harness"
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

func TestMain(m *testing.M) {
	start := time.Now()
	code := harness.Main(m)
	printSummary(time.Since(start))
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

// ---- sinks ----

// world is a daemon's sinks: where each one's deliveries can be counted.
type world struct {
	dir     string
	recv    *harness.Receiver
	archive string // archive sink directory
	db      string // SQLite file
}

func newWorld(t *testing.T) *world {
	dir := t.TempDir()
	return &world{dir: dir, recv: harness.NewReceiver(t), archive: filepath.Join(dir, "archive"), db: filepath.Join(dir, "events.db")}
}

// delivered counts deliveries per sink name ("archive", "db", "crm").
func (w *world) delivered() map[string]map[string]int {
	db, _ := harness.SQLRows(w.db) // a file being created: counted on the next look
	return map[string]map[string]int{
		"archive": harness.ArchivedCount(w.archive),
		"db":      db,
		"crm":     w.recv.Accepted(),
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
	return harness.Listeners("max_body = \"1MiB\"\n"+o.server) + harness.BadgerLog(o.logDir) + harness.CallKaroSource + fmt.Sprintf(`
[[sink]]
name = "archive"
plugin = "archive"
config = { dir = %q, max_size = %q, compress = "gzip" }
delivery = { batch_max = 200, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "500ms", max_attempts = 1000 }

[[sink]]
name = "db"
plugin = "sql"
config = { driver = "sqlite", path = %q, columns = { call_sid = "data.callSid" } }
delivery = { batch_max = 200, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "500ms", max_attempts = 1000 }

[[sink]]
name = "crm"
plugin = "http"
config = { url = %q, timeout = "5s" }
delivery = %s
`, w.archive, o.archiveSize, w.db, w.recv.URL+"/in", o.crmDelivery) + harness.AllCallsRoute("archive", "db") + harness.InterestedRoute("crm") + o.extraRoutes
}

// proof is the outcome of checking acknowledged events against the sinks.
type proof struct {
	acked, delivered, duplicates, lost int
	missing                            map[string][]string // sink → ids
}

// prove waits up to timeout until every acknowledged event is in every sink
// its routes name, and counts duplicates (extra copies in the archive and at
// the receiver; SQLite absorbs them by design).
func (w *world) prove(t *testing.T, events []harness.Acked, timeout time.Duration) proof {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := w.delivered()
		p := proof{acked: len(events), missing: map[string][]string{}}
		for _, e := range events {
			ok := true
			for _, s := range e.Sinks {
				n := got[s][e.ID]
				if n == 0 {
					ok = false
					p.missing[s] = append(p.missing[s], e.ID)
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

// eventExists asks the admin API whether the log holds event id.
func eventExists(t *testing.T, d *harness.Daemon, id string) (bool, error) {
	_, err := d.Admin().Event(t.Context(), id)
	var apiErr *admin.APIError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &apiErr) && apiErr.Status == 404:
		return false, nil
	}
	return false, err
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
