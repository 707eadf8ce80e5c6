package e2e

import (
	"bytes"
	"encoding/csv"
	"errors"
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
	checkStep7(t, root, mod, readme, tomls[0])
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

// checkStep7 plays steps 6 and 7 of the tutorial as written: a copy of
// the reference pipeline.toml with its [plugins] dirs set in place and the
// README's [[sink]] and [[route]] appended (toml, the README's block), with
// the README's typo ("paht" for "path"), then pipelined check. Its error
// must be the README's, line and column included: the lines move whenever
// the reference file grows. The plugin is where step 5 built it (mod),
// which the README writes as /usr/local/lib/pipelined.
func checkStep7(t *testing.T, root, mod string, readme []byte, toml string) {
	t.Helper()
	var want string
	for _, b := range readmeBlocks(t, readme, "") {
		if strings.Contains(b, `unknown config key "paht"`) {
			want = strings.TrimSpace(b)
		}
	}
	ref, err := os.ReadFile(filepath.Join(root, "pipeline.toml"))
	if err != nil {
		t.Fatal(err)
	}
	_, sinkAndRoute, found := strings.Cut(toml, `dirs = ["/usr/local/lib/pipelined"]`+"\n")
	if want == "" || !found || !bytes.Contains(ref, []byte("\ndirs = []\n")) || !strings.Contains(sinkAndRoute, `path = "data/calls.csv"`) {
		t.Fatalf("premise: step 7's output, step 6's dirs line and config, and the reference file's dirs = [] are what this test follows")
	}
	demo := t.TempDir()
	if err := os.CopyFS(filepath.Join(demo, "examples", "callkaro", "schemas"), os.DirFS(filepath.Join(root, "examples", "callkaro", "schemas"))); err != nil {
		t.Fatal(err)
	}
	conf := bytes.Replace(ref, []byte("\ndirs = []\n"), fmt.Appendf(nil, "\ndirs = [%q]\n", mod), 1)
	conf = append(conf, strings.Replace(sinkAndRoute, `path = "data/calls.csv"`, `paht = "data/calls.csv"`, 1)...)
	if err := os.WriteFile(filepath.Join(demo, "pipeline.toml"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(harness.Bin(t, "pipelined"), "check", "-c", "pipeline.toml")
	cmd.Dir = demo
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 78 {
		t.Fatalf("pipelined check with the typo = %v, want exit 78:\n%s", err, stderr.String())
	}
	got := strings.ReplaceAll(stderr.String(), filepath.Join(mod, "pipelined-sink-csv"), "/usr/local/lib/pipelined/pipelined-sink-csv")
	if i := strings.Index(got, "pipeline.toml:"); i < 0 || strings.TrimSpace(got[i:]) != want {
		t.Errorf("step 7: pipelined check says\n%s\nwhile examples/customsink/README.md shows\n%s", got, want)
	}
}
