package pluginhost

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipelined/pipelined/internal/stacks"
	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

// helperSpec returns a Spec that runs the test binary as plugin behaviour b.
// extra keys are merged into the config.
func helperSpec(t testing.TB, b string, extra map[string]any) Spec {
	t.Helper()
	t.Setenv(behaviourVar, b)
	cfg := map[string]any{"plugin_env": behaviourVar}
	for k, v := range extra {
		cfg[k] = v
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return Spec{Sink: "test-" + b, Command: os.Args[0], Config: raw}
}

func startHelper(t testing.TB, spec Spec, opts *Options) *Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Start(ctx, spec, opts)
	if err != nil {
		t.Fatalf("Start(%s) = %v", spec.Sink, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

func event(id, body string) sdk.Event {
	return sdk.Event{ID: id, Source: "src", Route: "r", ReceivedAt: time.Now(), Body: json.RawMessage(body), Attempt: 1}
}

func TestStartDeliverOutcomes(t *testing.T) {
	p := startHelper(t, helperSpec(t, "sink", nil), nil)
	if p.Pid() <= 0 || p.Exited() {
		t.Fatalf("Pid() = %d, Exited() = %v; want a running process", p.Pid(), p.Exited())
	}
	if got := p.ProtocolVersion(); got != protocol.ProtocolVersion {
		t.Errorf("ProtocolVersion() = %d, want %d", got, protocol.ProtocolVersion)
	}
	batch := []sdk.Event{
		event("e1", `{"outcome":"delivered"}`),
		event("e2", `{"outcome":"retry","after":"2s","error":"busy"}`),
		event("e3", `{"outcome":"permanent","error":"bad payload"}`),
		event("e4", `{"outcome":"retry","error":"later"}`),
		event("e5", `{"outcome":"not-attempted","after":"3s","error":"throttled"}`),
		event("e6", `{"outcome":"not-attempted","error":"out of time"}`),
	}
	res, err := p.Deliver(context.Background(), batch)
	if err != nil {
		t.Fatalf("Deliver = %v", err)
	}
	if len(res) != len(batch) {
		t.Fatalf("Deliver returned %d results, want %d", len(res), len(batch))
	}
	if !res[0].IsDelivered() {
		t.Errorf("result[0] = %v, want delivered", res[0])
	}
	if after, ok := res[1].IsRetry(); !ok || after != 2*time.Second || res[1].Err() == nil || res[1].Err().Error() != "busy" {
		t.Errorf("result[1] = %v, want retry after 2s: busy", res[1])
	}
	if !res[2].IsPermanent() || res[2].Err() == nil || res[2].Err().Error() != "bad payload" {
		t.Errorf("result[2] = %v, want permanent: bad payload", res[2])
	}
	if after, ok := res[3].IsRetry(); !ok || after != 0 || res[3].Err().Error() != "later" {
		t.Errorf("result[3] = %v, want retry: later", res[3])
	}
	if after, ok := res[4].IsNotAttempted(); !ok || after != 3*time.Second || res[4].Err() == nil || res[4].Err().Error() != "throttled" {
		t.Errorf("result[4] = %v, want not attempted, again after 3s: throttled", res[4])
	}
	if after, ok := res[5].IsNotAttempted(); !ok || after != 0 || res[5].Err() == nil || res[5].Err().Error() != "out of time" {
		t.Errorf("result[5] = %v, want not attempted: out of time", res[5])
	}
	if _, retry := res[5].IsRetry(); retry {
		t.Errorf("result[5] = %v: IsRetry is true for a not-attempted result", res[5])
	}

	// A whole-batch error from the sink is not a dead plugin.
	_, err = p.Deliver(context.Background(), []sdk.Event{event("e5", `{"outcome":"fail-batch","error":"database down"}`)})
	if err == nil || errors.Is(err, ErrPluginExited) || !strings.Contains(err.Error(), "database down") {
		t.Errorf("Deliver(fail-batch) = %v, want the sink's error, not ErrPluginExited", err)
	}
	if p.Exited() {
		t.Error("Exited() = true after a batch error")
	}
}

// TestDeliverTooLarge checks that a batch over gRPC's message size limit
// comes back from a plugin process as protocol.ErrBatchTooLarge (which the
// dispatcher splits on), not as a dead plugin, and that the parts of it
// that fit are delivered.
func TestDeliverTooLarge(t *testing.T) {
	p := startHelper(t, helperSpec(t, "sink", nil), nil)
	pad := strings.Repeat("x", 1<<20)
	batch := make([]sdk.Event, 5)
	for i := range batch {
		batch[i] = event(fmt.Sprintf("e%d", i), `{"outcome":"delivered","pad":"`+pad+`"}`)
	}
	_, err := p.Deliver(context.Background(), batch)
	if !errors.Is(err, protocol.ErrBatchTooLarge) || errors.Is(err, ErrPluginExited) {
		t.Fatalf("Deliver(5 events of 1 MiB) = %v, want ErrBatchTooLarge", err)
	}
	res, err := p.Deliver(context.Background(), batch[:2])
	if err != nil || len(res) != 2 || !res[0].IsDelivered() || !res[1].IsDelivered() {
		t.Errorf("Deliver(2 events of 1 MiB) = %v, %v; want both delivered", res, err)
	}
}

func TestConfigureError(t *testing.T) {
	spec := helperSpec(t, "sink", map[string]any{"reject": "config key \"dir\" is required"})
	p, err := Start(context.Background(), spec, nil)
	if err == nil {
		p.Stop(context.Background())
		t.Fatal("Start with a rejected config succeeded")
	}
	for _, want := range []string{`sink "test-sink"`, `config key "dir" is required`, "config"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error = %q, want it to contain %q", err, want)
		}
	}
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Start error = %v, want it to match ErrInvalidConfig", err)
	}
}

// TestConfigProblemsSayWhere: with Spec.Where, each problem a plugin finds
// in its config starts with where the file sets the key it names, or the
// table when it names none, as the daemon's own config errors do.
func TestConfigProblemsSayWhere(t *testing.T) {
	where := func(key string) string { return "pipeline.toml:9:" + cmp.Or(key, "table") }

	spec := helperSpec(t, "described", map[string]any{"rotate": "hourly", "token": "x", "dri": "data"})
	spec.Where = where
	_, err := Start(context.Background(), spec, nil)
	if err == nil {
		t.Fatal("Start with a config that fails Check succeeded")
	}
	want := []string{
		`pipeline.toml:9:table: sink "test-described": config does not fit plugin`,
		"\n  - pipeline.toml:9:dir: config key \"dir\" is required",
		"\n  - pipeline.toml:9:rotate: config key \"rotate\": invalid duration",
		"\n  - pipeline.toml:9:token: token is a secret",
		"\n  - pipeline.toml:9:dri: unknown config key \"dri\"",
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Start error = %q, want it to contain %q", err, w)
		}
	}

	for _, tt := range []struct{ reject, want string }{
		{`config key "dir" = "x": not a directory`, `pipeline.toml:9:dir: sink "test-sink": plugin rejected its config (fix the sink's config table in the configuration file): config key "dir" = "x"`},
		{`config key "columns.a" = "": want a path`, `pipeline.toml:9:columns.a: sink "test-sink": plugin rejected`},
		{"the database is unreachable", `pipeline.toml:9:table: sink "test-sink": plugin rejected`},
		{"config key \"a\": bad\nconfig key \"b\": worse", "pipeline.toml:9:table: sink \"test-sink\": plugin rejected its config (fix the sink's config table in the configuration file):\n  - pipeline.toml:9:a: config key \"a\": bad\n  - pipeline.toml:9:b: config key \"b\": worse"},
	} {
		spec := helperSpec(t, "sink", map[string]any{"reject": tt.reject})
		spec.Where = where
		_, err := Start(context.Background(), spec, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Start rejected with %q: error = %v, want it to start with %q and match ErrInvalidConfig", tt.reject, err, tt.want)
		}
	}
}

func TestStartChecksDescribedConfig(t *testing.T) {
	spec := helperSpec(t, "described", map[string]any{
		"rotate": "hourly",
		"token":  "s3cr3t",
		"dri":    "data",
		"reject": "Configure was called",
	})
	p, err := Start(context.Background(), spec, nil)
	if err == nil {
		p.Stop(context.Background())
		t.Fatal("Start with a config that fails Check succeeded")
	}
	for _, want := range []string{
		`sink "test-described": config does not fit plugin`,
		`config key "dir" is required: A directory`,
		`config key "rotate": invalid duration "hourly"`,
		"token is a secret: set token_env or token_file, never inline",
		`unknown config key "dri": check its spelling (valid keys: dir, plugin_env, plugin_file, reject, rotate, token_env, token_file)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error = %q, want it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "Configure was called") {
		t.Errorf("Start error = %q: Configure was called on a config that fails Check", err)
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("Start error = %q contains the inline secret", err)
	}
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Start error = %v, want it to match ErrInvalidConfig", err)
	}

	p = startHelper(t, helperSpec(t, "described", map[string]any{"dir": "data", "rotate": "2h"}), nil)
	if got, ok := p.Description(); !ok || !reflect.DeepEqual(got, testDescription) {
		t.Errorf("Description() = %+v, %v; want the helper's description", got, ok)
	}
	res, err := p.Deliver(context.Background(), []sdk.Event{event("e1", `{"outcome":"delivered"}`)})
	if err != nil || len(res) != 1 || !res[0].IsDelivered() {
		t.Errorf("Deliver on a described plugin = %v, %v; want delivered", res, err)
	}

	// A plugin that does not describe itself is configured as before.
	p = startHelper(t, helperSpec(t, "sink", map[string]any{"anything": "goes"}), nil)
	if _, ok := p.Description(); ok {
		t.Errorf("Description() of an undescribed plugin: ok = true, want false")
	}
}

func TestDescribe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	spec := helperSpec(t, "described", nil)
	got, err := Describe(ctx, spec, nil)
	if err != nil || !reflect.DeepEqual(got, testDescription) {
		t.Errorf("Describe(described) = %+v, %v; want the helper's description", got, err)
	}
	_, err = Describe(ctx, helperSpec(t, "sink", nil), nil)
	if !errors.Is(err, protocol.ErrNotDescribed) || !strings.Contains(err.Error(), `sink "test-sink"`) {
		t.Errorf("Describe(undescribed) = %v, want ErrNotDescribed naming the sink", err)
	}
}

func TestFind(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	_, err := Find(Spec{Sink: "archive", Plugin: "archive", Dirs: []string{d1, d2}})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find = %v, want ErrNotFound", err)
	}
	exe, _ := os.Executable()
	exe, _ = filepath.EvalSymlinks(exe)
	for _, want := range []string{
		`sink "archive": plugin "archive" not found: looked for pipelined-sink-archive in `,
		filepath.Dir(exe) + ", " + filepath.Join(filepath.Dir(filepath.Dir(exe)), "libexec", "pipelined") + ", " + d1 + ", " + d2,
		"(make build builds this repository's plugins; put one of your own in one of those directories, or set [plugins] dirs or the sink's command)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Find error = %q, want it to contain %q", err, want)
		}
	}

	// Not executable is skipped and said; executable is found.
	bad := filepath.Join(d1, "pipelined-sink-archive")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(d2, "pipelined-sink-archive")
	if err := os.WriteFile(good, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := Find(Spec{Sink: "archive", Plugin: "archive", Dirs: []string{d1, d2}})
	if err != nil || got != good {
		t.Errorf("Find = %q, %v, want %q", got, err, good)
	}
	_, err = Find(Spec{Sink: "archive", Plugin: "archive", Dirs: []string{d1}})
	if err == nil || !strings.Contains(err.Error(), "not executable") {
		t.Errorf("Find with a non-executable file = %v, want it to say not executable", err)
	}

	if got, err := Find(Spec{Sink: "x", Command: good, Plugin: "ignored"}); err != nil || got != good {
		t.Errorf("Find(command) = %q, %v, want %q", got, err, good)
	}
	if _, err := Find(Spec{Sink: "x", Command: filepath.Join(d1, "missing")}); err == nil || !strings.Contains(err.Error(), `sink "x"`) {
		t.Errorf("Find(missing command) = %v, want an error naming the sink", err)
	}
	if _, err := Find(Spec{Sink: "x", Plugin: "../evil"}); err == nil {
		t.Error("Find(plugin with a slash) succeeded")
	}
	if _, err := Find(Spec{Sink: "x"}); err == nil {
		t.Error("Find(no plugin, no command) succeeded")
	}
}

func TestSHA256(t *testing.T) {
	spec := helperSpec(t, "sink", nil)
	spec.SHA256 = strings.Repeat("ab", 32)
	p, err := Start(context.Background(), spec, nil)
	if err == nil {
		p.Stop(context.Background())
		t.Fatal("Start with a wrong sha256 succeeded")
	}
	for _, want := range []string{`sink "test-sink"`, spec.SHA256, "checksums did not match"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error = %q, want it to contain %q", err, want)
		}
	}

	spec.SHA256 = "not hex"
	if _, err := Start(context.Background(), spec, nil); err == nil || !strings.Contains(err.Error(), "not a hex SHA-256") {
		t.Errorf("Start with a malformed sha256 = %v, want it refused", err)
	}

	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	spec.SHA256 = hex.EncodeToString(sum[:])
	startHelper(t, spec, nil)
}

func TestEnvNames(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   []string
	}{
		{"empty", ``, nil},
		{"none", `{"dir":"x"}`, []string{}},
		{"top", `{"webhook_url_env":"SLACK_URL"}`, []string{"SLACK_URL"}},
		{"nested and lists", `{"a":{"token_env":["B","A"],"x":[{"dsn_env":"C"}]},"secret_env":"A"}`, []string{"A", "B", "C"}},
		{"non strings ignored", `{"n_env":3,"bad_env":"X=Y","e_env":""}`, []string{}},
		{"upper-case key", `{"URL_ENV":"U"}`, []string{"U"}},
		{"table of names", `{"header_env":{"Authorization":"CRM_TOKEN","X-Key":"K"}}`, []string{"CRM_TOKEN", "K"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EnvNames([]byte(tt.config))
			if err != nil {
				t.Fatalf("EnvNames(%s) = %v", tt.config, err)
			}
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("EnvNames(%s) = %q, want %q", tt.config, got, tt.want)
			}
		})
	}
	if _, err := EnvNames([]byte(`[1]`)); err == nil {
		t.Error("EnvNames([1]) succeeded, want an error")
	}
}

func TestPluginEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PIPELINED_TEST_DIR", dir)
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("OTHER_SINK_SECRET", "must-not-leak")
	t.Setenv("SLACK_URL", "https://hooks.example/T0")
	t.Setenv("LISTED_A", "a")
	t.Setenv("LANG", "C.UTF-8")
	t.Setenv("GOMEMLIMIT", "400MiB")
	spec := helperSpec(t, "sink", map[string]any{
		"dir_env": "PIPELINED_TEST_DIR",
		"nested": map[string]any{
			"webhook_url_env": "SLACK_URL",
			"list_env":        []string{"LISTED_A", "NOTIFY_SOCKET", "UNSET_VAR_X"},
		},
	})
	startHelper(t, spec, nil)
	b, err := os.ReadFile(filepath.Join(dir, "env.json"))
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range list {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	want := map[string]string{
		"SLACK_URL":                       "https://hooks.example/T0",
		"LISTED_A":                        "a",
		"PIPELINED_TEST_DIR":              dir,
		behaviourVar:                      "sink",
		"LANG":                            "C.UTF-8",
		"PATH":                            os.Getenv("PATH"),
		protocol.Handshake.MagicCookieKey: protocol.Handshake.MagicCookieValue,
	}
	for k, v := range want {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("plugin env %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	for _, k := range []string{"PLUGIN_PROTOCOL_VERSIONS", "PLUGIN_CLIENT_CERT"} {
		if _, ok := env[k]; !ok {
			t.Errorf("plugin env lacks %s, which go-plugin adds", k)
		}
	}
	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "OTHER_SINK_SECRET", "GOMEMLIMIT", "UNSET_VAR_X"} {
		if v, ok := env[k]; ok {
			t.Errorf("plugin env has %s=%q, want it absent", k, v)
		}
	}
	allowed := map[string]bool{"PLUGIN_MIN_PORT": true, "PLUGIN_MAX_PORT": true, "PLUGIN_PROTOCOL_VERSIONS": true, "PLUGIN_CLIENT_CERT": true}
	for _, n := range baseEnv {
		allowed[n] = true
	}
	for k := range want {
		allowed[k] = true
	}
	for k := range env {
		if !allowed[k] {
			t.Errorf("plugin env has unexpected variable %s", k)
		}
	}
}

// TestPluginLogsAsText: a plugin line reads in the daemon's text log as the
// plugin logged it, though go-plugin hands it over decoded from JSON into a
// map: whole numbers as integers, not floats, and the attributes in one
// order (sorted) on every line.
func TestPluginLogsAsText(t *testing.T) {
	buf := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(buf, nil))
	spec := helperSpec(t, "sink", map[string]any{"log": true})
	startHelper(t, spec, &Options{Logger: log})

	var line string
	waitFor(t, "the plugin's \"helper info line\" in the host's log", func() bool {
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, "helper info line") {
				line = l
			}
		}
		return line != ""
	})
	if want := `msg="helper info line" sink=` + spec.Sink + ` b=first k=i ratio=0.5 size=67108871 sizes="[67108871 2]"`; !strings.Contains(line, want) {
		t.Errorf("log line\n%s\nwant it to hold\n%s", line, want)
	}
}

func TestPluginLogs(t *testing.T) {
	buf := &testlog.Buffer{}
	log := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	spec := helperSpec(t, "sink", map[string]any{"log": true})
	startHelper(t, spec, &Options{Logger: log})

	want := map[string]string{
		"helper debug line": "DEBUG",
		"helper info line":  "INFO",
		"helper warn line":  "WARN",
		"helper error line": "ERROR",
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := map[string]map[string]any{}
		for _, r := range buf.Lines(t, "") {
			if msg, _ := r["msg"].(string); want[msg] != "" || msg == "starting plugin" {
				found[msg] = r
			}
		}
		if len(found) == len(want)+1 {
			for msg, level := range want {
				r := found[msg]
				if r["level"] != level || r["sink"] != spec.Sink || r["k"] == nil {
					t.Errorf("log record %v: want level %s, sink %s and k", r, level, spec.Sink)
				}
				if _, ok := r["timestamp"]; ok {
					t.Errorf("log record %v has go-plugin's zero timestamp", r)
				}
			}
			if r := found["starting plugin"]; r["level"] != "DEBUG" || r["sink"] != spec.Sink {
				t.Errorf("go-plugin record %v: want level DEBUG and sink %s", r, spec.Sink)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log records so far: %v\nwant messages %v and starting plugin", buf.Lines(t, ""), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStopCallsClose(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PIPELINED_TEST_DIR", dir)
	spec := helperSpec(t, "sink", map[string]any{"dir_env": "PIPELINED_TEST_DIR"})
	p, err := Start(context.Background(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "closed.txt")); err != nil {
		t.Errorf("the plugin's Close did not run: %v", err)
	}
	if !p.Exited() {
		t.Error("Exited() = false after Stop")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) = %v after Stop, want ESRCH", pid, err)
	}
	if _, err := p.Deliver(context.Background(), []sdk.Event{event("e", `{}`)}); !errors.Is(err, ErrStopped) {
		t.Errorf("Deliver after Stop = %v, want ErrStopped", err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Errorf("second Stop = %v, want nil", err)
	}
}

// TestStopKillsAPluginThatDoesNotStop stops a plugin whose Close never
// returns: Stop kills it when its ctx ends, and says so with ErrKilled,
// which the daemon's log turns into a line naming the sink.
func TestStopKillsAPluginThatDoesNotStop(t *testing.T) {
	spec := helperSpec(t, "sink", map[string]any{"close_hang": true})
	p, err := Start(context.Background(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	const limit = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	t0 := time.Now()
	err = p.Stop(ctx)
	if took := time.Since(t0); took > limit+5*time.Second {
		t.Errorf("Stop took %v with a %v ctx", took, limit)
	}
	if !errors.Is(err, ErrKilled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want an error wrapping ErrKilled and context.DeadlineExceeded", err)
	}
	if msg := fmt.Sprint(err); !strings.Contains(msg, spec.Sink) || !strings.Contains(msg, fmt.Sprintf("pid %d", pid)) {
		t.Errorf("Stop error = %q, want it to name the sink and pid %d", msg, pid)
	}
	if !p.Exited() {
		t.Error("Exited() = false after Stop")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) = %v after Stop, want ESRCH", pid, err)
	}

	// A plugin that stops on time was not killed.
	q, err := Start(context.Background(), helperSpec(t, "sink", nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := q.Stop(ctx2); err != nil {
		t.Errorf("Stop of a plugin that stops = %v, want nil", err)
	}
}

func TestWrongProtocolVersion(t *testing.T) {
	spec := helperSpec(t, "version99", nil)
	p, err := Start(context.Background(), spec, nil)
	if err == nil {
		p.Stop(context.Background())
		t.Fatal("Start of a protocol 99 plugin succeeded")
	}
	for _, want := range []string{`sink "test-version99"`, "speaks sink protocol version 99", "this pipelined speaks 1", "rebuild"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error = %q, want it to contain %q", err, want)
		}
	}
}

func TestSupervisorRestartsAfterKill(t *testing.T) {
	opts := &Options{BackoffMin: 50 * time.Millisecond}
	s := NewSupervisor(helperSpec(t, "sink", nil), opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	if st, _, _ := s.State(); st != StateStopped {
		t.Errorf("State() before start = %s, want %s", st, StateStopped)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok := []sdk.Event{event("a", `{}`)}
	if _, err := s.Deliver(ctx, ok); err != nil {
		t.Fatalf("first Deliver = %v", err)
	}
	st, pid1, _ := s.State()
	if st != StateRunning || pid1 <= 0 {
		t.Fatalf("State() = %s, %d, want running with a pid", st, pid1)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := s.Deliver(ctx, []sdk.Event{event("slow", `{"sleep":"20s"}`)})
		errc <- err
	}()
	// The premise: the call waits inside the first plugin's Deliver when
	// that plugin is killed. Killed before, the call would go to the
	// restarted plugin and sleep.
	stacks.WaitBlocked(t, "pluginhost.(*Plugin).Deliver", 1)
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPluginExited) {
			t.Fatalf("Deliver during SIGKILL = %v, want ErrPluginExited", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Deliver did not return after the plugin was killed")
	}
	// The supervisor restarts it on its own after 50-100ms, so the state
	// may be backoff, starting or running again by now.
	if st, _, lastErr := s.State(); !errors.Is(lastErr, ErrPluginExited) {
		t.Errorf("State() after kill = %s, %v, want ErrPluginExited as the last error", st, lastErr)
	} else if !strings.Contains(lastErr.Error(), "exited (signal: killed)") {
		t.Errorf("the last error after a kill = %q, want it to say how the plugin ended (signal: killed)", lastErr)
	}

	res, err := s.Deliver(ctx, ok)
	if err != nil || len(res) != 1 || !res[0].IsDelivered() {
		t.Fatalf("Deliver after restart = %v, %v, want delivered", res, err)
	}
	st, pid2, _ := s.State()
	if st != StateRunning || pid2 == pid1 || pid2 <= 0 {
		t.Errorf("State() after restart = %s, pid %d, want running with a new pid (old %d)", st, pid2, pid1)
	}

	if err := s.Stop(ctx); err != nil {
		t.Errorf("Stop = %v", err)
	}
	if st, _, _ := s.State(); st != StateStopped {
		t.Errorf("State() after Stop = %s, want stopped", st)
	}
	if err := syscall.Kill(pid2, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) after Stop = %v, want ESRCH", pid2, err)
	}
	if _, err := s.Deliver(ctx, ok); !errors.Is(err, ErrStopped) {
		t.Errorf("Deliver after Stop = %v, want ErrStopped", err)
	}
}

// TestSupervisorRestartsAHungPlugin: a plugin process that is alive but
// answers nothing (stopped here; frozen as a whole in life) is killed and
// replaced once a call runs out of time; one that is slow keeps running,
// its batch failed to be retried, until three calls in a row have run out
// of time (its sink stuck in its own code, while go-plugin's health server
// still answers).
func TestSupervisorRestartsAHungPlugin(t *testing.T) {
	logs := &testlog.Buffer{}
	s := NewSupervisor(helperSpec(t, "sink", nil), &Options{BackoffMin: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	deliver := func(timeout time.Duration, events ...sdk.Event) ([]sdk.Result, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return s.Deliver(ctx, events)
	}
	ok, slow := event("a", `{}`), event("slow", `{"sleep":"3s"}`)
	delivered := func(what string) int {
		t.Helper()
		res, err := deliver(30*time.Second, ok)
		if err != nil || len(res) != 1 || !res[0].IsDelivered() {
			t.Fatalf("Deliver %s = %v, %v, want delivered", what, res, err)
		}
		st, pid, _ := s.State()
		if st != StateRunning || pid <= 0 {
			t.Fatalf("State() %s = %s, %d, want running with a pid", what, st, pid)
		}
		return pid
	}
	pid1 := delivered("at first")

	// Slow but answering its health check: kept, twice; a delivery in
	// between starts the count again.
	for i := range 4 {
		_, err := deliver(300*time.Millisecond, slow)
		if err == nil || errors.Is(err, ErrPluginExited) {
			t.Fatalf("slow call %d past its deadline = %v, want a deadline error, not ErrPluginExited", i+1, err)
		}
		if i == 1 {
			if pid := delivered("between slow calls"); pid != pid1 {
				t.Fatalf("pid %d after two slow calls, want %d: restarted", pid, pid1)
			}
		}
	}
	if _, pid, _ := s.State(); pid != pid1 {
		t.Fatalf("pid %d after slow calls, want %d: restarted", pid, pid1)
	}
	// The third in a row: restarted.
	_, err := deliver(300*time.Millisecond, slow)
	if !errors.Is(err, ErrPluginExited) || !strings.Contains(err.Error(), "3 calls in a row") {
		t.Fatalf("third slow call in a row = %v, want ErrPluginExited (3 calls in a row)", err)
	}
	pid2 := delivered("after the stuck plugin's restart")
	if pid2 == pid1 {
		t.Fatalf("pid %d after three slow calls in a row, want a new process", pid2)
	}

	// Hung: killed and replaced at once.
	if err := syscall.Kill(pid2, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid2, syscall.SIGCONT) })
	waitFor(t, "every thread of the plugin stopped", func() bool { return stopped(pid2) }) // a loaded machine stops threads late
	_, err = deliver(300*time.Millisecond, ok)
	if !errors.Is(err, ErrPluginExited) || !strings.Contains(err.Error(), "stopped answering") {
		t.Fatalf("Deliver to a stopped plugin = %v, want ErrPluginExited (stopped answering)", err)
	}
	waitFor(t, "the hung plugin killed", func() bool { return errors.Is(syscall.Kill(pid2, 0), syscall.ESRCH) })
	if pid3 := delivered("after the hung plugin's restart"); pid3 == pid2 {
		t.Errorf("pid %d after the hung plugin's restart, want a new process", pid3)
	}
	// The operator reads which: hung, not exited, both times.
	if n := strings.Count(logs.String(), `msg="plugin hung; restarting it"`); n != 2 || strings.Contains(logs.String(), "plugin exited; restarting it") {
		t.Errorf("the log says %d times that the plugin hung, want 2 and no exit:\n%s", n, logs.String())
	}
}

// waitFor waits up to 10 s for cond, checking every 10 ms, and fails t
// with what it waited for when it does not come.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}

// stopped reports whether every thread of process pid is stopped (state T
// in /proc/<pid>/task/*/stat).
func stopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, f := range stats {
		b, err := os.ReadFile(f)
		i := bytes.LastIndexByte(b, ')')
		if err != nil || i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return len(stats) > 0
}

func TestSupervisorBackoff(t *testing.T) {
	s := NewSupervisor(Spec{Sink: "x"}, &Options{BackoffMin: 100 * time.Millisecond, BackoffMax: 30 * time.Second})
	tests := []struct {
		failures int
		max      time.Duration // the ceiling: the delay is drawn in [100ms, max]
	}{
		{1, 200 * time.Millisecond},
		{2, 400 * time.Millisecond},
		{3, 800 * time.Millisecond},
		{40, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.failures), func(t *testing.T) {
			s.failures = tt.failures
			seen := map[time.Duration]bool{}
			for range 50 {
				got := s.backoff()
				if got < 100*time.Millisecond || got > tt.max {
					t.Fatalf("backoff() after %d failures = %v, want within [100ms, %v]", tt.failures, got, tt.max)
				}
				seen[got] = true
			}
			if len(seen) < 2 {
				t.Errorf("backoff() after %d failures gave one value 50 times, want jitter", tt.failures)
			}
		})
	}
}

func TestSupervisorStartFailureBacksOff(t *testing.T) {
	spec := helperSpec(t, "sink", map[string]any{"reject": "nope"})
	s := NewSupervisor(spec, &Options{BackoffMin: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.Deliver(ctx, []sdk.Event{event("a", `{}`)}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Deliver = %v, want the Configure error", err)
	}
	st, _, lastErr := s.State()
	if st != StateFailed || lastErr == nil {
		t.Errorf("State() = %s, %v, want failed with the error", st, lastErr)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := s.Deliver(short, []sdk.Event{event("a", `{}`)}); err == nil {
		t.Error("Deliver during backoff succeeded")
	}
}

func TestNotAPlugin(t *testing.T) {
	_, err := Start(context.Background(), helperSpec(t, "bogus", nil), nil)
	for _, want := range []string{`sink "test-bogus"`, "exited before the handshake", `unknown test plugin behaviour`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Start(not a plugin) = %v, want it to contain %q", err, want)
		}
	}
}

// TestSupervisorRestartsWithoutTraffic kills a plugin that nothing is
// delivered to and checks that a new process runs within 5s on its own.
func TestSupervisorRestartsWithoutTraffic(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := NewSupervisor(helperSpec(t, "sink", nil), &Options{Metrics: metrics.New(reg)})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("Start = %v", err)
	}
	st := s.Status()
	if st.State != StateRunning || st.PID <= 0 {
		t.Fatalf("Status() after Start = %+v, want running with a pid", st)
	}
	if up := metricValue(t, reg, "pipelined_sink_up"); up != 1 {
		t.Errorf("pipelined_sink_up after Start = %v, want 1", up)
	}
	pid1 := st.PID
	killed := time.Now()
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var pid2 int
	for time.Since(killed) < 5*time.Second {
		if st := s.Status(); st.State == StateRunning && st.PID != pid1 && st.PID > 0 {
			pid2 = st.PID
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pid2 == 0 {
		t.Fatalf("no new plugin process within 5s of kill -9 (pid %d), with no delivery; Status() = %+v", pid1, s.Status())
	}
	t.Logf("new pid %d running %v after the kill", pid2, time.Since(killed).Round(time.Millisecond))
	st = s.Status()
	if !errors.Is(st.Err, ErrPluginExited) || st.ErrAt.Before(killed) {
		t.Errorf("Status() after the restart = %+v, want the exit as the last error, after %v", st, killed)
	}
	if err := syscall.Kill(pid2, 0); err != nil {
		t.Errorf("kill(%d, 0) = %v, want the new process alive", pid2, err)
	}
}

// TestPanicIsQuoted: a plugin that panics in Deliver dies; the error
// quotes the panic's own line, not the last line of the stack after it
// (which is all the end of stderr holds, and says nothing).
func TestPanicIsQuoted(t *testing.T) {
	buf := &testlog.Buffer{}
	p := startHelper(t, helperSpec(t, "sink", nil), &Options{Logger: slog.New(slog.NewTextHandler(buf, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := p.Deliver(ctx, []sdk.Event{event("e1", `{"outcome":"panic","error":"assignment to entry in nil map"}`)})
	if !errors.Is(err, ErrPluginExited) {
		t.Fatalf("Deliver(panics) = %v, want ErrPluginExited", err)
	}
	if want := `its last stderr line: "panic: assignment to entry in nil map`; !strings.Contains(err.Error(), want) {
		t.Errorf("Deliver(panics) = %v, want it to contain %s", err, want)
	}
	p.stderr.mu.Lock()
	lines := strings.Split(strings.TrimSpace(string(p.stderr.buf)), "\n")
	p.stderr.mu.Unlock()
	if last := lines[len(lines)-1]; len(lines) < 4 || strings.Contains(last, "panic") {
		t.Errorf("premise: stderr should end with the stack after the panic line; its last line is %q", last)
	}
	// The host's log has the stack, without the blank line after the
	// panic's (an ERROR record with an empty message).
	waitFor(t, "the stack's last frame in the host's log", func() bool { return strings.Contains(buf.String(), "created by ") })
	if log := buf.String(); !strings.Contains(log, `level=ERROR msg="panic: assignment to entry in nil map"`) || strings.Contains(log, `msg=""`) {
		t.Errorf("host log:\n%s\nwant the panic line at ERROR and no empty message", log)
	}
}

// lateTimer is a context whose deadline passes before it ends: its timer
// runs late, as a loaded machine's can, so the plugin's answer to a call
// out of time arrives before the context says so.
type lateTimer struct {
	context.Context // ends late
	deadline        time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.deadline, true }

// TestOutOfTimeAnswerBeforeOurTimer: a plugin that fails its batch as its
// side of the deadline passes (ABORTED, as an older sdk or another
// language's does) has run out of time, even when its answer arrives before
// the host's own timer fires: three such calls in a row restart it. Which
// answer the host gets is gRPC's race: the plugin's ABORTED, with the
// sink's words kept in the error, or the RST_STREAM its server sends at
// the deadline; each is a call out of time.
func TestOutOfTimeAnswerBeforeOurTimer(t *testing.T) {
	p := startHelper(t, helperSpec(t, "oldsdk", nil), nil)
	aborted := 0
	for i := 1; i <= maxTimeouts; i++ {
		parent, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ctx := lateTimer{Context: parent, deadline: time.Now().Add(200 * time.Millisecond)}
		_, err := p.Deliver(ctx, []sdk.Event{event("e", `{}`)})
		late := ctx.Err() == nil // the premise: the answer came before the context ended
		cancel()
		if !late {
			t.Fatalf("call %d: the context ended before the answer came: the test proves nothing", i)
		}
		if strings.Contains(err.Error(), "gave up: the database did not answer") {
			aborted++
		} else if !strings.Contains(err.Error(), "context deadline exceeded") {
			t.Errorf("call %d = %v, want the sink's words or a deadline", i, err)
		}
		if exited := errors.Is(err, ErrPluginExited); exited != (i == maxTimeouts) {
			t.Fatalf("call %d out of time = %v; want ErrPluginExited at call %d only", i, err, maxTimeouts)
		}
	}
	t.Logf("%d of %d answers were the plugin's ABORTED, the others gRPC's RST_STREAM", aborted, maxTimeouts)
}

// TestTailWriterKeepsFatalLine: the panic line is quoted even when the
// stack after it (many goroutines, GOTRACEBACK=all) pushed it out of the
// end that is kept, whatever the pieces the lines come in.
func TestTailWriterKeepsFatalLine(t *testing.T) {
	frame := "google.golang.org/grpc.(*Server).handleStream(0x6c73766c008, {0xcc7698, 0x6c7378c6000})\n\t/root/go/pkg/mod/google.golang.org/grpc@v1.85.0/server.go:1595 +0xa70\n"
	out := "starting\nfatal error: concurrent map writes\n\ngoroutine 7 [running]:\n" + strings.Repeat(frame, 40)
	for _, piece := range []int{1, 7, len(out)} {
		w := &tailWriter{max: 2048}
		for b := []byte(out); len(b) > 0; b = b[min(piece, len(b)):] {
			w.Write(b[:min(piece, len(b))])
		}
		if strings.Contains(string(w.buf), "fatal error") {
			t.Fatalf("premise: the fatal line should be out of the kept end")
		}
		if got, want := w.last(), "fatal error: concurrent map writes"; got != want {
			t.Errorf("written in pieces of %d: last() = %q, want %q", piece, got, want)
		}
	}
	w := &tailWriter{max: 2048}
	w.Write([]byte("connecting to the database\n" + strings.Repeat("x", 400) + "\n"))
	if got := w.last(); got != strings.Repeat("x", 300)+"..." {
		t.Errorf("without a panic: last() = %q, want the last line, cut to 300 bytes", got)
	}
}

// TestTailWriterReadsJSONLines: the SDK's JSON log line last written is
// quoted as an operator reads it, not as escaped JSON; go-plugin's debug
// lines are skipped, and other lines are quoted as they are.
func TestTailWriterReadsJSONLines(t *testing.T) {
	for _, c := range []struct{ name, out, want string }{
		{"the SDK's line",
			`{"@level":"info","@message":"http sink configured","@module":"sink","@timestamp":"2026-12-07T05:00:00Z","url":"https://crm.example/hook","timeout":"10s"}` + "\n",
			"[info] http sink configured timeout=10s url=https://crm.example/hook"},
		{"go-plugin's chatter after it",
			`{"@level":"error","@message":"connect failed","err":"refused"}` + "\n" + `{"@level":"debug","@message":"plugin address","address":"/tmp/x"}` + "\n",
			"[error] connect failed err=refused"},
		{"JSON without a message", `{"a":1}` + "\n", `{"a":1}`},
		{"plain text", "listening\n", "listening"},
	} {
		w := &tailWriter{max: 2048}
		w.Write([]byte(c.out))
		if got := w.last(); got != c.want {
			t.Errorf("%s: last() = %q, want %q", c.name, got, c.want)
		}
	}
}

// TestSupervisorFailedAtStart runs a binary that exits at start: the state
// is failed with its last stderr line, the start error matches
// ErrPluginExited, and the supervisor keeps trying.
func TestSupervisorFailedAtStart(t *testing.T) {
	supervisor := func(backoff time.Duration) (*Supervisor, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		s := NewSupervisor(helperSpec(t, "bogus", nil), &Options{BackoffMin: backoff, BackoffMax: 2 * backoff, Metrics: metrics.New(reg)})
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s.Stop(ctx)
		})
		return s, reg
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A backoff longer than the test: no new start can begin (and
	// show "starting") between Start's return and Status.
	s, _ := supervisor(time.Hour)
	err := s.Start(ctx)
	if !errors.Is(err, ErrPluginExited) {
		t.Fatalf("Start(exits at start) = %v, want ErrPluginExited", err)
	}
	st := s.Status()
	want := `unknown test plugin behaviour "bogus"`
	if st.State != StateFailed || st.Reason != want {
		t.Errorf("Status() = %q, reason %q, want %q, reason %q", st.State, st.Reason, StateFailed, want)
	}
	s, reg := supervisor(20 * time.Millisecond)
	if err := s.Start(ctx); !errors.Is(err, ErrPluginExited) {
		t.Fatalf("Start(exits at start) = %v, want ErrPluginExited", err)
	}
	restarts := func() float64 { return metricValue(t, reg, "pipelined_plugin_restarts_total") }
	deadline := time.Now().Add(10 * time.Second)
	for restarts() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := restarts(); got < 2 {
		t.Errorf("restarts of a plugin that exits at start = %v after 10s, want it tried again on its own", got)
	}
	if up := metricValue(t, reg, "pipelined_sink_up"); up != 0 {
		t.Errorf("pipelined_sink_up of a failed plugin = %v, want 0", up)
	}
}

// metricValue returns the value of the one series of the gauge or counter
// name in reg, or -1 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		return m.GetCounter().GetValue()
	}
	return -1
}

// TestCredentialsDirectoryOnlyWhenNamed: a plugin learns
// CREDENTIALS_DIRECTORY (where every sink's systemd credentials sit) only
// when its config names a file there; another plugin cannot find, and so
// read, the others' secrets through it.
func TestCredentialsDirectoryOnlyWhenNamed(t *testing.T) {
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	tests := []struct {
		name   string
		config map[string]any
		want   bool
	}{
		{"names nothing there", map[string]any{"path": "/var/lib/pipelined/events.db"}, false},
		{"${CREDENTIALS_DIRECTORY}", map[string]any{"secret_file": "${CREDENTIALS_DIRECTORY}/crm-secret"}, true},
		{"$CREDENTIALS_DIRECTORY nested", map[string]any{"tls": map[string]any{"key_file": []string{"$CREDENTIALS_DIRECTORY/key"}}}, true},
		{"absolute path under it", map[string]any{"tls_key_file": creds + "/client.key"}, true},
		{"a sibling with the same prefix", map[string]any{"tls_key_file": creds + "-other/client.key"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("PIPELINED_TEST_DIR", dir)
			tt.config["dir_env"] = "PIPELINED_TEST_DIR"
			startHelper(t, helperSpec(t, "sink", tt.config), nil)
			b, err := os.ReadFile(filepath.Join(dir, "env.json"))
			if err != nil {
				t.Fatal(err)
			}
			var list []string
			if err := json.Unmarshal(b, &list); err != nil {
				t.Fatal(err)
			}
			got := slices.Contains(list, "CREDENTIALS_DIRECTORY="+creds)
			if got != tt.want {
				t.Errorf("plugin with config %v has CREDENTIALS_DIRECTORY = %v, want %v", tt.config, got, tt.want)
			}
		})
	}
}

// TestGoPluginKillIsNamed checks the line go-plugin writes when a plugin
// it asked to exit has not within 2s and it kills it: it reads as the
// kill it is, at WARN, with the sink.
func TestGoPluginKillIsNamed(t *testing.T) {
	var buf testlog.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil)).With("sink", "crm")
	newHCLogger(log, "pipelined-sink-http", nil).Warn("plugin failed to exit gracefully")
	got := buf.Lines(t, "")
	if len(got) != 1 || got[0]["msg"] != "sink plugin did not exit within 2s of being asked to: killed (SIGKILL)" ||
		got[0]["level"] != "WARN" || got[0]["sink"] != "crm" {
		t.Errorf("log = %v, want one WARN line that sink crm's plugin was killed", got)
	}
}
