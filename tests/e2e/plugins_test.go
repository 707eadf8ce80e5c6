package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/tests/harness"
)

// runCLI runs the built pipelined (next to the plugins) in a new
// directory and returns its stdout, stderr and exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.Bin(t, "pipelined"), args...)
	cmd.Dir = t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run pipelined %v: %v", args, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func archiveConfig(t *testing.T, sinkConfig string) string {
	dir := t.TempDir()
	return harness.WriteConfig(t, dir, fmt.Sprintf(`
[log]
dir = %q

[[source]]
name = "callkaro"
path = "/hooks/callkaro"
auth = { type = "none" }

[[sink]]
name = "archive"
plugin = "archive"
config = %s

[[route]]
name = "all"
when = 'body.event == "call_ended"'
to = ["archive"]
`, filepath.Join(dir, "log"), sinkConfig))
}

func TestCheckReportsDescribedConfigProblems(t *testing.T) {
	file := archiveConfig(t, `{ dri = "data/archive", rotate = "hourly", max_size = "64MiB" }`)
	out, errOut, code := runCLI(t, "check", "-c", file)
	if code != 78 {
		t.Errorf("check with a bad sink config: exit %d, want 78 (EX_CONFIG); stdout %q stderr %q", code, out, errOut)
	}
	for _, want := range []string{
		`sink "archive": config does not fit plugin`,
		"`pipelined plugins describe archive` lists its keys",
		`config key "dir" is required`,
		`config key "rotate": invalid duration "hourly"`,
		`unknown config key "dri": check its spelling (valid keys: compress, dir, max_size, prefix, rotate)`,
		// Each problem points into the file, as the daemon's own do.
		file + `:13:1: sink "archive": config does not fit plugin`,
		"\n  - " + file + `:13:12: unknown config key "dri"`,
		"\n  - " + file + `:13:34: config key "rotate": invalid duration`,
		"\n  - " + file + `:13:1: config key "dir" is required`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check stderr = %q, want it to contain %q", errOut, want)
		}
	}

	// A value the plugin's Configure refuses points at its key too.
	bad := archiveConfig(t, `{ dir = "data/archive", compress = "zip" }`)
	_, errOut, code = runCLI(t, "check", "-c", bad)
	if want := bad + `:13:34: sink "archive": plugin rejected its config (fix the sink's config table in the configuration file): config key "compress" = "zip"`; code != 78 || !strings.Contains(errOut, want) {
		t.Errorf("check with compress = \"zip\": exit %d, stderr %q; want 78 and %q", code, errOut, want)
	}

	// --no-plugins skips the plugins, so the same file passes.
	out, errOut, code = runCLI(t, "check", "--no-plugins", "-c", file)
	if code != 0 || !strings.Contains(out, "ok (1 sources, 1 sinks, 1 routes, plugins not started)") {
		t.Errorf("check --no-plugins: exit %d, stdout %q, stderr %q; want 0 and ok", code, out, errOut)
	}

	out, errOut, code = runCLI(t, "check", "-c", archiveConfig(t, `{ dir = "data/archive" }`))
	if code != 0 || !strings.Contains(out, "config checked against its description") {
		t.Errorf("check with a good config: exit %d, stdout %q, stderr %q; want 0", code, out, errOut)
	}
}

func TestPluginsDescribe(t *testing.T) {
	out, errOut, code := runCLI(t, "plugins", "describe", "archive")
	if code != 0 {
		t.Fatalf("plugins describe archive: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"archive: Appends events to JSON Lines files",
		"KEY       TYPE      DEFAULT   REQUIRED  SECRET  DOC",
		`rotate    duration  "1h"      no        no      Rotate the current file when it is this old`,
		"dir       string    -         yes       no",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plugins describe archive = %q, want it to contain %q", out, want)
		}
	}

	out, errOut, code = runCLI(t, "plugins", "describe", "archive", "--json")
	var got struct {
		Plugin, Summary string
		Fields          []struct {
			Name, Type, Default string
			Required, Secret    bool
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
		t.Fatalf("plugins describe --json: exit %d, %v; stdout %q stderr %q", code, err, out, errOut)
	}
	if got.Plugin != "archive" || len(got.Fields) != 5 || got.Fields[0].Name != "dir" || !got.Fields[0].Required || got.Fields[2].Default != `"64MiB"` {
		t.Errorf("plugins describe --json = %+v", got)
	}

	_, errOut, code = runCLI(t, "plugins", "describe", "nope")
	if code != 1 || !strings.HasPrefix(errOut, `pipelined plugins describe: plugin "nope" not found`) {
		t.Errorf("plugins describe nope: exit %d, stderr %q; want 1 and not found (naming no sink: there is none)", code, errOut)
	}
	if _, _, code := runCLI(t, "plugins", "describe"); code != 2 {
		t.Errorf("plugins describe without a name: exit %d, want 2", code)
	}
}

func TestPluginsList(t *testing.T) {
	out, errOut, code := runCLI(t, "plugins", "list")
	if code != 0 || !strings.Contains(out, "archive") || !strings.Contains(out, "Appends events to JSON Lines files") {
		t.Errorf("plugins list: exit %d, stdout %q, stderr %q; want archive and its summary", code, out, errOut)
	}
}
