package rulestest

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/daemon"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

// pluginVar, set in a plugin's environment, makes the test binary serve
// nopSink instead of running the tests: the sinks of TestDaemonAgrees.
const pluginVar = "PIPELINED_RULESTEST_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(pluginVar) != "" && os.Getenv(protocol.Handshake.MagicCookieKey) == protocol.Handshake.MagicCookieValue {
		sdk.Serve(nopSink{})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// nopSink delivers every event at once.
type nopSink struct{}

func (nopSink) Configure(context.Context, json.RawMessage) error { return nil }

func (nopSink) Deliver(context.Context, []sdk.Event) ([]sdk.Result, error) { return nil, nil }

// TestDaemonAgrees runs every case of the CallKaro example's rule tests
// twice: through the suite, as `pipelined test` does, and as a real HTTP
// request to a daemon serving the same configuration (its sinks replaced
// by this test binary as a plugin that delivers everything). Each case
// must get the same status and, when refused, the same reason; an
// accepted one the same sinks and dedup key, read back from the daemon's
// log through the admin API; a duplicate must be answered as one, with the
// id of the case it duplicates.
func TestDaemonAgrees(t *testing.T) {
	const cfgFile, testFile = "../../examples/callkaro/pipeline.toml", "../../examples/callkaro/pipeline_test.toml"
	f, err := Parse(testFile)
	if err != nil {
		t.Fatal(err)
	}
	suite, err := Load(f, func() (*config.Config, error) { return config.Load(cfgFile) })
	if err != nil {
		t.Fatalf("Load(%s) = %v", cfgFile, err)
	}
	for _, r := range suite.Run(nil) {
		if !r.Passed() {
			t.Fatalf("the example's case %q fails under pipelined test: %v", r.Name, r.Diffs)
		}
	}

	cfg, err := config.Load(cfgFile) // the daemon's own load
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Log.Dir = filepath.Join(t.TempDir(), "log")
	t.Setenv(pluginVar, "nop")
	for i := range cfg.Sinks {
		cfg.Sinks[i].Plugin, cfg.Sinks[i].Command = "", os.Args[0]
		cfg.Sinks[i].Config = map[string]any{"plugin_env": pluginVar}
	}
	ingestURL, adminURL := startDaemon(t, cfg)

	ids := map[string]string{} // case name -> id the daemon answered
	kinds := map[string]bool{} // what the cases covered: new, duplicate, refused
	for i := range f.Cases {
		c := &f.Cases[i]
		t.Run(c.Name, func(t *testing.T) {
			want := suite.eval(i, c)
			if want.setup != nil {
				t.Fatalf("the case cannot run: %v", want.setup)
			}
			path := ""
			for _, s := range cfg.Sources {
				if s.Name == want.source {
					path = s.Path
				}
			}
			req, err := http.NewRequest(http.MethodPost, ingestURL+path, bytes.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c.Headers {
				req.Header.Set(k, v)
			}
			if req.Header.Get("Content-Type") == "" {
				req.Header.Set("Content-Type", "application/json")
			}
			var ans struct {
				ID         string   `json:"id"`
				Duplicate  bool     `json:"duplicate"`
				Error      string   `json:"error"`
				Ignored    bool     `json:"ignored"`
				Reason     string   `json:"reason"`
				Violations []string `json:"violations"`
			}
			status := getJSON(t, req, &ans)
			if status != want.status {
				t.Fatalf("daemon answered %d %q, pipelined test says %d %q", status, ans.Error, want.status, want.reason)
			}
			if status != http.StatusOK {
				kinds["refused"] = true
				if ans.Error != want.reason {
					t.Errorf("daemon's reason:\n  %s\npipelined test's reason:\n  %s", ans.Error, want.reason)
				}
				return
			}
			if ans.Ignored != want.ignored || ans.Reason != want.reason && want.ignored {
				t.Fatalf("daemon answered ignored %v %q, pipelined test says %v %q", ans.Ignored, ans.Reason, want.ignored, want.reason)
			}
			if ans.Ignored {
				kinds["refused"] = true
				return
			}
			ids[c.Name] = ans.ID
			if c.ExpectDuplicateOf != "" {
				kinds["duplicate"] = true
				if first := ids[c.ExpectDuplicateOf]; !ans.Duplicate || ans.ID != first {
					t.Errorf("daemon answered {id %s, duplicate %v}, want the duplicate of %q (id %s)", ans.ID, ans.Duplicate, c.ExpectDuplicateOf, first)
				}
				return
			}
			if ans.Duplicate {
				t.Fatalf("daemon answered a duplicate of %s; pipelined test expects a new event", ans.ID)
			}
			kinds["new"] = true
			ereq, _ := http.NewRequest(http.MethodGet, adminURL+"/v1/events/"+ans.ID, nil)
			var ev struct {
				DedupKey string   `json:"dedup_key"`
				Sinks    []string `json:"sinks"`
			}
			if code := getJSON(t, ereq, &ev); code != http.StatusOK {
				t.Fatalf("GET /v1/events/%s = %d", ans.ID, code)
			}
			var sinks []string
			for _, tg := range want.targets {
				sinks = append(sinks, tg.Sink)
			}
			if got, want := sorted(ev.Sinks), sorted(sinks); !slices.Equal(got, want) {
				t.Errorf("daemon logged sinks %v, pipelined test says %v", got, want)
			}
			if ev.DedupKey != want.dedupKey {
				t.Errorf("daemon logged dedup key %q, pipelined test says %q", ev.DedupKey, want.dedupKey)
			}
		})
	}
	if len(kinds) != 3 {
		t.Errorf("the cases covered %v; the test needs new events, a duplicate and refusals", kinds)
	}
}

// startDaemon runs cfg in-process until the test ends and returns the
// base URLs of its ingest and admin listeners.
func startDaemon(t *testing.T, cfg *config.Config) (ingestURL, adminURL string) {
	t.Helper()
	type addrs struct{ ingest, admin net.Addr }
	ready := make(chan addrs, 1)
	d := daemon.New(cfg, &daemon.Options{OnReady: func(i, a net.Addr) { ready <- addrs{i, a} }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon Run = %v", err)
		}
	})
	select {
	case a := <-ready:
		return "http://" + a.ingest.String(), "http://" + a.admin.String()
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("daemon stopped before it was ready: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("daemon not ready after a minute")
	}
	return "", ""
}

// getJSON does req and decodes its JSON answer into v.
func getJSON(t *testing.T, req *http.Request, v any) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", req.Method, req.URL.Path, err)
	}
	return resp.StatusCode
}
