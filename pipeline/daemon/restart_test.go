package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/pipelined/pipelined/pipeline/config"
)

// lockedBuffer is a bytes.Buffer for a logger that goroutines share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the JSON log lines written so far.
func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(l.b.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestReloadKeepsStartOnlySettings reloads twice a configuration that
// changes settings read only at start (a listen address, the log's
// retention and memtable) and one that reloads (log_requests): each reload
// warns of each start-only key with the running value, the stored
// configuration keeps what runs, and the reloadable one applies.
func TestReloadKeepsStartOnlySettings(t *testing.T) {
	const base = `
[server]
listen = %q
log_requests = %v

[admin]
listen = "127.0.0.1:0"

[log]
dir = %q
retention = %q
memtable_size = %q

[[source]]
name = "src"
path = "/hooks/src"
auth = { type = "none" }
`
	dir := t.TempDir()
	changed := fmt.Sprintf(base, "127.0.0.1:1", false, dir, "48h", "64MiB")
	var logs lockedBuffer
	d, _ := startDaemonWith(t, fmt.Sprintf(base, "127.0.0.1:0", true, dir, "168h", "16MiB"), Options{
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Load:   func() (*config.Config, error) { return config.Parse("test.toml", []byte(changed)) },
	})
	want := map[string][2]string{
		"server.listen":     {"127.0.0.1:0", "127.0.0.1:1"},
		"log.retention":     {"168h0m0s", "48h0m0s"},
		"log.memtable_size": {"16MiB", "64MiB"},
	}
	for reload := 1; reload <= 2; reload++ {
		if err := d.Reload(context.Background()); err != nil {
			t.Fatalf("reload %d: %v", reload, err)
		}
		got := map[string][2]string{}
		for _, l := range logs.lines(t) {
			if l["msg"] == "a changed setting takes effect only at restart" {
				got[l["key"].(string)] = [2]string{l["running"].(string), l["new"].(string)}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("reload %d warned of %v, want %v (running, new)", reload, got, want)
		}
		logs.mu.Lock()
		logs.b.Reset()
		logs.mu.Unlock()
		cfg := d.cfg.Load()
		if cfg.Server.Listen != "127.0.0.1:0" || cfg.Log.Retention.String() != "168h0m0s" || cfg.Log.MemtableSize.String() != "16MiB" {
			t.Errorf("after reload %d the stored configuration has listen %s, retention %s, memtable_size %s; want the running 127.0.0.1:0, 168h0m0s, 16MiB",
				reload, cfg.Server.Listen, cfg.Log.Retention, cfg.Log.MemtableSize)
		}
		if cfg.Server.LogRequests {
			t.Errorf("after reload %d server.log_requests = true, want the reloaded false", reload)
		}
	}
}
