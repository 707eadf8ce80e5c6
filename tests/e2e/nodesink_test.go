package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// nodeSinkDir returns examples/node-sink with its npm packages installed
// (npm ci, unless they are there and newer than the lock file). It skips
// the test without node or npm, except under CI, where .ci/run installs
// them and their absence fails the test.
func nodeSinkDir(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed, and CI must run the Node.js sink: .ci/run installs nodejs and npm", tool)
			}
			t.Skipf("%s is not installed: skipping the Node.js sink (Debian: apt-get install nodejs npm)", tool)
		}
	}
	dir := filepath.Join(harness.Root(), "examples", "node-sink")
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if inst, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil && !inst.ModTime().Before(lock.ModTime()) {
		return dir
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in examples/node-sink: %v\n%s", err, out)
	}
	return dir
}

// TestNodeSinkThroughDaemon runs the Node.js sink as the daemon runs any
// plugin (found in [plugins] dirs, AutoMTLS, the daemon's restricted
// environment): `pipelined check` accepts its config against its
// description and names a typo, and one webhook reaches its file.
func TestNodeSinkThroughDaemon(t *testing.T) {
	harness.SkipIfShort(t)
	pluginDir := nodeSinkDir(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "calls.jsonl")
	sink := func(config string) string {
		return fmt.Sprintf(`
[plugins]
dirs = [%q]

[[sink]]
name = "calls-jsonl"
plugin = "node"
config = %s
`, pluginDir, config) + harness.AllCallsRoute("calls-jsonl")
	}

	bad := harness.WriteConfig(t, t.TempDir(), callKaroHeader(filepath.Join(dir, "log-bad"))+sink(fmt.Sprintf(`{ paht = %q }`, out)))
	_, errOut, code := runCLI(t, "check", "-c", bad)
	if code != 78 {
		t.Errorf("check with a typo in the node sink's config: exit %d, want 78; stderr %q", code, errOut)
	}
	for _, want := range []string{`config key "path" is required`, `unknown config key "paht": check its spelling (valid keys: fsync, path)`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check stderr = %q, want it to contain %q", errOut, want)
		}
	}

	cfg := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+sink(fmt.Sprintf(`{ path = %q }`, out)))
	d := harness.Start(t, cfg)
	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("node-1", "interested"))
	if err != nil || code != 200 {
		t.Fatalf("POST = %d %v %v", code, ans, err)
	}
	id := ans["id"].(string)
	harness.Eventually(t, 30*time.Second, func() error {
		f, err := os.Open(out)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				ID      string `json:"id"`
				Attempt int    `json:"attempt"`
				Payload struct {
					Data struct {
						CallSid string `json:"callSid"`
					} `json:"data"`
				} `json:"payload"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				return fmt.Errorf("%s: %v", out, err)
			}
			if line.ID == id && line.Attempt == 1 && line.Payload.Data.CallSid == "node-1" {
				return nil
			}
		}
		return fmt.Errorf("%s has no line for event %s", out, id)
	})
}
