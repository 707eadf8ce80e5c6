package e2e

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// fencedBlock is one fenced code block of a README: its language and text.
var fencedBlock = regexp.MustCompile("(?ms)^ *```(\\w*)\\n(.*?)^ *```")

// readmeBlocks returns the text of every ```lang block of a README, in
// order, with the indentation of a list item removed.
func readmeBlocks(t *testing.T, readme []byte, lang string) []string {
	t.Helper()
	var out []string
	for _, m := range fencedBlock.FindAllSubmatch(readme, -1) {
		if string(m[1]) != lang {
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(m[2]), "\n") {
			lines = append(lines, strings.TrimPrefix(l, "   "))
		}
		out = append(out, strings.Join(lines, "\n"))
	}
	return out
}

// TestTutorialOutsideTheRepository follows examples/customsink/README.md
// as a plugin author would, in a temporary directory outside the
// repository: it runs the README's sh blocks verbatim with PIPELINED set to
// this checkout (as the README says for the unpublished sdk), copies
// main.go and customsink_test.go where steps 3 and 4 say to, so the
// plugin's own go test (sinktest.Run and RunBinary) runs; then checks that
// the plugin's module graph holds none of the daemon's dependencies, and
// serves one webhook through a real daemon with the README's [[sink]] and
// [[route]] into the CSV file.
func TestTutorialOutsideTheRepository(t *testing.T) {
	harness.SkipIfShort(t)
	root, err := filepath.Abs(harness.Root())
	if err != nil {
		t.Fatal(err)
	}
	example := filepath.Join(root, "examples", "customsink")
	readme, err := os.ReadFile(filepath.Join(example, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	sh := readmeBlocks(t, readme, "sh")
	// The premise: the blocks are the steps this test knows how to follow.
	// It runs those of steps 2, 4 and 5; step 1's clones from GitHub (this
	// test sets PIPELINED to the checkout instead), and steps 6 and 9 are
	// played below with the harness's config and daemon.
	if len(sh) != 7 || !strings.Contains(sh[0], "export PIPELINED=") || !strings.Contains(sh[0], "make -C \"$PIPELINED\" build") ||
		!strings.Contains(sh[1], "go mod init") || !strings.Contains(sh[2], "go test ./...") || !strings.Contains(sh[3], "go build -o pipelined-sink-csv") ||
		!strings.Contains(sh[4], `cp "$PIPELINED/pipeline.toml" .`) || !strings.Contains(sh[5], "pipelined serve -c pipeline.toml") || !strings.Contains(sh[6], "curl ") {
		t.Fatalf("examples/customsink/README.md sh blocks = %q; want 7 (get pipelined, start a module, test, build, copy the config, serve, post): update this test with the README", sh)
	}
	work := t.TempDir()
	script := strings.Join([]string{
		"set -ex",
		sh[1],
		// Steps 3 and 4: copy main.go and customsink_test.go.
		`cp "$EXAMPLE/main.go" "$EXAMPLE/customsink_test.go" .`,
		sh[2],
		sh[3],
		"go list -m all > modules.txt",
	}, "\n")
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = work
	// The go command of a plugin author: no GOFLAGS or GOWORK of this
	// repository's test run.
	cmd.Env = append(os.Environ(), "PIPELINED="+root, "EXAMPLE="+example, "GOFLAGS=", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s", err, out)
	}
	mod := filepath.Join(work, "pipelined-sink-csv")
	if !bytes.Contains(out, []byte("ok  \texample.com/pipelined-sink-csv")) {
		t.Errorf("the tutorial module's go test did not pass:\n%s", out)
	}

	// The plugin's module graph: the sdk and what a plugin needs, none of
	// the daemon's dependencies.
	modules, err := os.ReadFile(filepath.Join(mod, "modules.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(modules, []byte("github.com/pipelined/pipelined/sdk v0.0.0-00010101000000-000000000000 => "+root+"/sdk")) {
		t.Errorf("go list -m all in the plugin's module does not show the sdk replaced by the checkout:\n%s", modules)
	}
	for _, forbidden := range []string{"github.com/dgraph-io/badger", "github.com/nats-io/", "github.com/expr-lang/expr", "github.com/BurntSushi/toml", "github.com/pipelined/pipelined "} {
		if bytes.Contains(modules, []byte(forbidden)) {
			t.Errorf("a plugin module built against the sdk pulls in %s:\n%s", forbidden, modules)
		}
	}

	// Step 6: the README's [[sink]] and [[route]], the plugin directory
	// being the module's (where step 5 built it) instead of
	// /usr/local/lib/pipelined.
	tomls := readmeBlocks(t, readme, "toml")
	if len(tomls) != 1 || !strings.Contains(tomls[0], `dirs = ["/usr/local/lib/pipelined"]`) {
		t.Fatalf("examples/customsink/README.md toml blocks = %q; want one, with dirs = [\"/usr/local/lib/pipelined\"]", tomls)
	}
	sinkAndRoute := strings.Replace(tomls[0], `dirs = ["/usr/local/lib/pipelined"]`, fmt.Sprintf("dirs = [%q]", mod), 1)
	dir := t.TempDir()
	cfg := harness.WriteConfig(t, dir, harness.Listeners("")+harness.BadgerLog(filepath.Join(dir, "log"))+harness.CallKaroSource+sinkAndRoute)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := harness.Start(t, cfg)
	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("CA-tutorial-1", "interested"))
	if err != nil || code != 200 {
		t.Fatalf("post = %d %v, %v; want 200", code, ans, err)
	}
	id, _ := ans["id"].(string)
	if id == "" {
		t.Fatalf("post answer %v has no id", ans)
	}
	csvFile := filepath.Join(dir, "data", "calls.csv")
	harness.Eventually(t, 20*time.Second, func() error {
		f, err := os.Open(csvFile)
		if err != nil {
			return err
		}
		defer f.Close()
		rows, err := csv.NewReader(f).ReadAll()
		if err != nil {
			return err
		}
		if len(rows) != 2 || rows[0][0] != "id" || rows[1][0] != id || !strings.Contains(rows[1][5], "CA-tutorial-1") {
			return fmt.Errorf("%s rows = %q, want the header and event %s", csvFile, rows, id)
		}
		return nil
	})
}
