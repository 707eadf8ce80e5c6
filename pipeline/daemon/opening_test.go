package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// recordingNotifier keeps what the daemon tells systemd.
type recordingNotifier struct {
	noNotifier
	mu   sync.Mutex
	sent []string
}

func (r *recordingNotifier) add(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, s)
	return nil
}

func (r *recordingNotifier) Ready(string) error    { return r.add("READY") }
func (r *recordingNotifier) Status(s string) error { return r.add("STATUS=" + s) }
func (r *recordingNotifier) ExtendTimeout(d time.Duration) error {
	return r.add(fmt.Sprint("EXTEND_TIMEOUT=", d))
}

func (r *recordingNotifier) count(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.sent {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// TestLongOpenAsksForTime opens a log that takes ten report intervals:
// while it counts progress, the daemon asks systemd for three intervals
// more each time and says why in its status; once it counts none, it asks
// for nothing (a stuck start must time out) and warns; when the open is
// over, it asks once more, for the plugins' starts (none here: three
// intervals).
func TestLongOpenAsksForTime(t *testing.T) {
	const tick = 40 * time.Millisecond
	var logs testlog.Buffer
	nt := &recordingNotifier{}
	var extendsWhileCounting, extendsBeforeEnd int
	startDaemonWith(t, `
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
dir = "`+t.TempDir()+`"
[[source]]
name = "src"
path = "/hooks/src"
auth = { type = "none" }
`, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Notifier: nt}, func(d *Daemon) {
		d.openTick = tick
		d.openLog = func(_ context.Context, _ config.Log, _ *slog.Logger, progress *atomic.Int64) (pipeline.Log, func() map[string]int64, error) {
			for end := time.Now().Add(6 * tick); time.Now().Before(end); time.Sleep(tick / 8) {
				progress.Add(1000) // rebuilding queues
			}
			extendsWhileCounting = nt.count("EXTEND_TIMEOUT=")
			time.Sleep(4 * tick) // stuck
			extendsBeforeEnd = nt.count("EXTEND_TIMEOUT=")
			return memlog.New(), nil, nil
		}
	})
	if extendsWhileCounting < 2 {
		t.Errorf("EXTEND_TIMEOUT sent %d times in six intervals of progress, want at least 2 (sent: %q)", extendsWhileCounting, nt.sent)
	}
	if n := nt.count("EXTEND_TIMEOUT=" + (3 * tick).String()); n != nt.count("EXTEND_TIMEOUT=") {
		t.Errorf("EXTEND_TIMEOUT sent %q, want three intervals (%v) each time", nt.sent, 3*tick)
	}
	if extendsBeforeEnd > extendsWhileCounting+1 { // one tick may see the last progress
		t.Errorf("EXTEND_TIMEOUT sent %d times by the open's end, %d while it counted progress: want none once it stopped", extendsBeforeEnd, extendsWhileCounting)
	}
	if got := nt.count("EXTEND_TIMEOUT="); got != extendsBeforeEnd+1 {
		t.Errorf("EXTEND_TIMEOUT sent %d times in all, %d by the open's end: want one more after it, for the plugins' starts", got, extendsBeforeEnd)
	}
	if nt.count("STATUS=opening the event log in ") == 0 {
		t.Errorf("no status line while opening; sent %q", nt.sent)
	}
	var warned bool
	for _, l := range logs.Lines(t, "") {
		warned = warned || strings.HasPrefix(l["msg"].(string), "opening the event log: no progress")
	}
	if !warned {
		t.Errorf("no warning while the open made no progress")
	}
}
