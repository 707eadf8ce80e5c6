package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestVersionNamesTheBuild: a pipelined built from a checkout (as go build
// and go install do) names its commit, build date and Go version in
// `version --json`, and the running daemon says the same in
// pipelined_build_info.
func TestVersionNamesTheBuild(t *testing.T) {
	bin := harness.Bin(t, "pipelined")
	head, err := exec.Command("git", "-C", harness.Root(), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (git rev-parse: %v): the go command records no commit", err)
	}
	want := strings.TrimSpace(string(head))

	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("pipelined version --json: %v", err)
	}
	var v struct{ Version, Commit, Date, Go, OS, Arch string }
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("pipelined version --json = %q: %v", out, err)
	}
	// A work tree with uncommitted changes builds as <commit>+dirty.
	if strings.TrimSuffix(v.Commit, "+dirty") != want || v.Date == "" || !strings.HasPrefix(v.Go, "go1.") || v.Version == "" {
		t.Errorf("version --json = %s, want commit %s, a date, a Go version and a version", out, want)
	}
	text, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(text), v.Commit) || !strings.Contains(string(text), v.Go) {
		t.Errorf("pipelined version = %q (%v), want the commit %s and %s", text, err, v.Commit, v.Go)
	}

	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))))
	series := `pipelined_build_info{commit="` + v.Commit + `",goversion="` + v.Go + `",version="` + v.Version + `"}`
	if got := d.Metric(t, series); got != "1" {
		t.Errorf("/metrics %s = %q, want 1", series, got)
	}
}
