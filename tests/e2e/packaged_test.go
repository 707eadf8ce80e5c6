package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestGoInstallGivesRealNames: `go install ./cmd/...` into an empty GOBIN
// gives the daemon and every shipped plugin under the names the daemon
// looks for, and a daemon started from there finds its plugins and
// delivers.
func TestGoInstallGivesRealNames(t *testing.T) {
	harness.SkipIfShort(t)
	gobin := t.TempDir()
	cmd := exec.Command("go", "install", "./cmd/...")
	cmd.Dir = harness.Root()
	cmd.Env = append(os.Environ(), "GOBIN="+gobin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install ./cmd/...: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(gobin)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{"pipelined", "pipelined-load", "pipelined-sink-archive", "pipelined-sink-http", "pipelined-sink-slack", "pipelined-sink-sql"}
	if !slices.Equal(got, want) {
		t.Fatalf("go install ./cmd/... wrote %v, want %v", got, want)
	}
	deliversThroughArchive(t, filepath.Join(gobin, "pipelined"))
}

// TestPluginsFoundInLibexec: a daemon installed as the packages do, in
// <prefix>/bin with its plugins in <prefix>/libexec/pipelined, finds them
// without [plugins] dirs.
func TestPluginsFoundInLibexec(t *testing.T) {
	root := t.TempDir()
	bin, libexec := filepath.Join(root, "usr", "bin"), filepath.Join(root, "usr", "libexec", "pipelined")
	for _, d := range []string{bin, libexec} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyExecutable(t, harness.Bin(t, "pipelined"), filepath.Join(bin, "pipelined"))
	copyExecutable(t, harness.Bin(t, "pipelined-sink-archive"), filepath.Join(libexec, "pipelined-sink-archive"))
	deliversThroughArchive(t, filepath.Join(bin, "pipelined"))
}

// deliversThroughArchive starts daemon with one archive sink named by its
// plugin name, posts a call and waits until the archive holds it.
func deliversThroughArchive(t *testing.T, daemon string) {
	t.Helper()
	dir := t.TempDir()
	archive := filepath.Join(dir, "archive")
	cfg := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "archive"
plugin = "archive"
config = { dir = %q }
delivery = { batch_wait = "5ms" }
`, archive)+harness.AllCallsRoute("archive"))
	d, err := harness.StartWith(t, cfg, harness.Options{Binary: daemon})
	if err != nil {
		t.Fatal(err)
	}
	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("install-1", "interested"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST = %d %v %v, want 200", code, ans, err)
	}
	harness.WaitArchived(t, archive, []string{ans["id"].(string)}, 20*time.Second)
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
