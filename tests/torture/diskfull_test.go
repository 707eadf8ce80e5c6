package torture

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/smallfs"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestDiskFillsMidWrite: the disk fills while the daemon stands between
// its space check and its write to Badger's memory-mapped memtable WAL.
// SIGSTOP under load stands for the stall of a loaded machine: the writes
// in flight at the stop passed their check; another process fills the
// filesystem (dd) meanwhile; SIGCONT. Each time the daemon must carry on
// (503 + Retry-After while full, ingest again once space is freed), never
// die of SIGBUS (P7), and nothing acknowledged may be lost.
func TestDiskFillsMidWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("TestDiskFillsMidWrite mounts a size-limited tmpfs and must run as root; skipped (run `sudo make torture`)")
	}
	w := newWorld(t)
	mnt := smallfs.Mount(t, "tmpfs", filepath.Join(w.dir, "small"), 256<<20)
	cfg := harness.WriteConfig(t, w.dir, w.config(configOpts{logDir: filepath.Join(mnt, "log")}))
	mem := newMemWatch(t)
	d := harness.Start(t, cfg)
	mem.watch(d.PID())
	l := harness.StartLoad(t, harness.LoadOptions{Clients: 8, Prefix: "midwrite", Sinks: standardSinks}, d.URL)
	l.WaitCount(t, 50, 30*time.Second)

	cycles := scale(20, 50)
	filler := filepath.Join(mnt, "filler")
	n503, nRetryAfter := 0, 0
	var resumed []time.Duration
	for i := range cycles {
		d.Signal(syscall.SIGSTOP)
		waitState(t, d.PID(), 'T', 10*time.Second)
		out, _ := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M").CombinedOutput()
		if !strings.Contains(string(out), "No space left") {
			t.Fatalf("cycle %d: premise: dd did not fill the filesystem: %s", i, out)
		}
		d.Signal(syscall.SIGCONT)
		// Full: a probe is refused with 503 + Retry-After.
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if !d.Alive() {
				t.Fatalf("BUG: cycle %d: the daemon died when the disk filled in the middle of its writes (%s); P7 wants 503 + Retry-After:\n%s",
					i, firstLine(tail(d.Log(), 4000)), tail(d.Log(), 3000))
			}
			if time.Now().After(end) {
				t.Fatalf("cycle %d: no 503 within 30s of the disk filling; load %s", i, l.Summary())
			}
			resp, err := harness.Client.Post(d.URL+"/hooks/callkaro", "application/json",
				bytes.NewReader(harness.CallEvent(fmt.Sprint("midwrite-probe-", time.Now().UnixNano()), "not_interested")))
			if err != nil {
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 503 {
				n503++
				if resp.Header.Get("Retry-After") != "" {
					nRetryAfter++
				}
				break
			}
		}
		// Freed: ingest resumes. Its writes follow the ones in flight at
		// the stop through the log's one committer, so a daemon alive now
		// took those on the full disk.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		freed, before := time.Now(), l.Count()
		for end := freed.Add(30 * time.Second); l.Count() < before+10; time.Sleep(10 * time.Millisecond) {
			if !d.Alive() {
				t.Fatalf("BUG: cycle %d: the daemon died after the disk filled in the middle of its writes (%s):\n%s",
					i, firstLine(tail(d.Log(), 4000)), tail(d.Log(), 3000))
			}
			if time.Now().After(end) {
				t.Fatalf("cycle %d: ingest did not resume within 30s of freeing space; load %s\n%s", i, l.Summary(), tail(d.Log(), 3000))
			}
		}
		resumed = append(resumed, time.Since(freed))
	}
	if n503 != nRetryAfter {
		t.Errorf("%d of %d 503 answers lack Retry-After", n503-nRetryAfter, n503)
	}
	events := l.Finish()
	p := w.prove(t, events, 120*time.Second)
	slices.Sort(resumed)
	addRow(t, row{Scenario: fmt.Sprintf("4b. disk filled mid-write ×%d (SIGSTOP, dd, SIGCONT under load)", cycles),
		Acked: p.acked, Delivered: p.delivered, Duplicates: p.duplicates, Lost: p.lost,
		Recover: fmt.Sprintf("ingest resumed p50 %v, max %v after freeing space, no restart",
			resumed[len(resumed)/2].Round(time.Millisecond), resumed[len(resumed)-1].Round(time.Millisecond)),
		MemPeak: mem.String(),
		Note:    fmt.Sprintf("%d probes 503 while full (all with Retry-After: %v); load %s", n503, n503 == nRetryAfter, l.Summary())})
}

// waitState waits until process pid is in state (as /proc/PID/stat says:
// 'T' stopped).
func waitState(t *testing.T, pid int, state byte, within time.Duration) {
	t.Helper()
	for end := time.Now().Add(within); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatalf("process %d: %v", pid, err)
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == state {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("process %d not in state %c within %v: %s", pid, state, within, b)
		}
	}
}
