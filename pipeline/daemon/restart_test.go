package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline/config"
)

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
trusted_proxies = [%s]

[admin]
listen = "127.0.0.1:0"

[log]
dir = %q
retention = %q
memtable_size = %q

[telemetry]
service_name = %q

[[source]]
name = "src"
path = "/hooks/src"
auth = { type = "none" }
`
	dir := t.TempDir()
	changed := fmt.Sprintf(base, "127.0.0.1:1", false, `"10.0.0.0/8"`, dir, "48h", "64MiB", "renamed")
	var logs testlog.Buffer
	d, _ := startDaemonWith(t, fmt.Sprintf(base, "127.0.0.1:0", true, "", dir, "168h", "16MiB", "pipelined"), Options{
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Load:   func() (*config.Config, error) { return config.Parse("test.toml", []byte(changed)) },
	}, nil)
	want := map[string][2]string{
		"server.listen":     {"127.0.0.1:0", "127.0.0.1:1"},
		"log.retention":     {"168h0m0s", "48h0m0s"},
		"log.memtable_size": {"16MiB", "64MiB"},
	}
	wantInPart := map[string][2]string{"server.trusted_proxies": {"", "10.0.0.0/8"}}
	for reload := 1; reload <= 2; reload++ {
		res, err := d.reloadAndWait(context.Background())
		if err != nil {
			t.Fatalf("reload %d: %v", reload, err)
		}
		restart := res.RestartNeeded
		// What the admin API answers (restart_needed), each reload: the
		// file still differs from what runs.
		slices.Sort(restart)
		if want := []string{"[telemetry]", "log.memtable_size", "log.retention", "server.listen", "server.trusted_proxies"}; reload == 1 && !slices.Equal(restart, want) {
			t.Errorf("reload %d: restart needed for %v, want %v", reload, restart, want)
		}
		got, gotInPart, telemetry := map[string][2]string{}, map[string][2]string{}, 0
		for _, l := range logs.Lines(t, "") {
			switch msg := l["msg"].(string); {
			case msg == "a changed setting takes effect only at restart":
				got[l["key"].(string)] = [2]string{l["running"].(string), l["new"].(string)}
			case strings.HasPrefix(msg, "a changed setting takes effect in part"):
				gotInPart[l["key"].(string)] = [2]string{l["running"].(string), l["new"].(string)}
			case strings.HasPrefix(msg, "[telemetry] changed"):
				telemetry++
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("reload %d warned of %v, want %v (running, new)", reload, got, want)
		}
		if fmt.Sprint(gotInPart) != fmt.Sprint(wantInPart) {
			t.Errorf("reload %d warned of %v in part, want %v (running, new)", reload, gotInPart, wantInPart)
		}
		wantInPart = map[string][2]string{} // in force now: the next reload changes nothing
		if telemetry != 1 {
			t.Errorf("reload %d warned of [telemetry] %d times, want once", reload, telemetry)
		}
		logs.Reset()
		cfg := d.cfg.Load()
		if cfg.Server.Listen != "127.0.0.1:0" || cfg.Log.Retention.String() != "168h0m0s" || cfg.Log.MemtableSize.String() != "16MiB" {
			t.Errorf("after reload %d the stored configuration has listen %s, retention %s, memtable_size %s; want the running 127.0.0.1:0, 168h0m0s, 16MiB",
				reload, cfg.Server.Listen, cfg.Log.Retention, cfg.Log.MemtableSize)
		}
		if cfg.Server.LogRequests || len(cfg.Server.TrustedProxies) != 1 {
			t.Errorf("after reload %d server.log_requests = %v, trusted_proxies = %v; want the reloaded false and [10.0.0.0/8]",
				reload, cfg.Server.LogRequests, cfg.Server.TrustedProxies)
		}
		if cfg.Telemetry.ServiceName != "pipelined" {
			t.Errorf("after reload %d telemetry.service_name = %q, want the running %q", reload, cfg.Telemetry.ServiceName, "pipelined")
		}
	}
}

// TestReloadChecksWhatWillRun refuses a reload whose file is valid only
// with a start-only setting it cannot change: delivery.order_key with
// log.backend = "badger", on a daemon that runs JetStream.
func TestReloadChecksWhatWillRun(t *testing.T) {
	const base = `
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
backend = %q
urls = ["nats://127.0.0.1:4222"]
[[source]]
name = "src"
path = "/hooks/src"
auth = { type = "none" }
%s`
	var logs testlog.Buffer
	d, _ := startDaemonWith(t, fmt.Sprintf(base, "jetstream", ""), Options{ // the test's log is a memlog whatever the backend
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Load: func() (*config.Config, error) {
			return config.Parse("test.toml", []byte(fmt.Sprintf(base, "badger", `
[[sink]]
name = "ordered"
command = "/nonexistent/plugin"
delivery = { order_key = "body.k" }
`)))
		},
	}, nil)
	err := d.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "settings read only at start") || !strings.Contains(err.Error(), "order_key") {
		t.Fatalf("Reload() = %v, want it refused: order_key needs the badger backend, and JetStream runs", err)
	}
	if cfg := d.cfg.Load(); cfg.Log.Backend != "jetstream" || len(cfg.Sinks) != 0 {
		t.Errorf("after the refused reload: backend %q, %d sinks; want the running jetstream and none", cfg.Log.Backend, len(cfg.Sinks))
	}
}

// TestReloadAfterTheTokenFileMoved rotates the admin token as an operator
// would: a new file, the config pointed at it, the old file removed, then
// a reload for another change. The token changes only at restart, and the
// reload must not fail on the old file it no longer needs to read.
func TestReloadAfterTheTokenFileMoved(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"token", "token2"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f+"-secret-0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const base = `
[server]
listen = "127.0.0.1:0"
log_requests = %v
[admin]
listen = "127.0.0.1:0"
token_file = %q
[log]
dir = %q
[[source]]
name = "src"
path = "/hooks/src"
auth = { type = "none" }
`
	d, _ := startDaemonWith(t, fmt.Sprintf(base, false, filepath.Join(dir, "token"), dir), Options{
		Load: func() (*config.Config, error) {
			return config.Parse("test.toml", []byte(fmt.Sprintf(base, true, filepath.Join(dir, "token2"), dir)))
		},
	}, nil)
	if err := os.Remove(filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(context.Background()); err != nil {
		t.Fatalf("Reload() = %v, want nil: the running token's file is not read again", err)
	}
	if cfg := d.cfg.Load(); !cfg.Server.LogRequests || cfg.Admin.TokenFile != filepath.Join(dir, "token") {
		t.Errorf("after the reload: log_requests %v, token_file %s; want the reloaded true and the running token file", cfg.Server.LogRequests, cfg.Admin.TokenFile)
	}
}
