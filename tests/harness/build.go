// Package harness runs the real pipelined binaries for the suites that
// need them (tests/e2e, tests/torture): it builds pipelined, every plugin
// and pipelined-load once per test binary, starts `pipelined serve` on a
// configuration and waits until it is ready, posts CallKaro events (alone
// or as a load from concurrent clients), reads what the sinks received
// (archive files, SQLite rows, an HTTP receiver) and reads the admin API
// through [admin.Client].
//
// Every helper that can fail takes a testing.TB and fails the test on the
// test's own goroutine; the load's clients report their problems back to
// it. Under -short, [Build] (and so [Start]) skips the test: `go test
// -short ./...` stays a quick unit run.
//
// A package that uses the harness removes the binaries when it ends:
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// binaries maps the package of each binary, relative to the repository's
// root, to the name it is built as: the daemon finds a sink's plugin next
// to itself as pipelined-sink-<name>.
var binaries = map[string]string{
	"./cmd/pipelined":              "pipelined",
	"./cmd/pipelined-load":         "pipelined-load",
	"./cmd/pipelined-sink-archive": "pipelined-sink-archive",
	"./cmd/pipelined-sink-sql":     "pipelined-sink-sql",
	"./cmd/pipelined-sink-slack":   "pipelined-sink-slack",
	"./cmd/pipelined-sink-http":    "pipelined-sink-http",
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

var (
	rootOnce sync.Once
	root     string
)

// Root returns the repository's root directory: two up from this file's
// source, or, when the source path is not known (-trimpath), the main
// module's directory as the go command reports it.
func Root() string {
	rootOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root = filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return
		}
		if out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output(); err == nil {
			root = strings.TrimSpace(string(out))
		}
	})
	return root
}

// SkipIfShort skips t under -short: it needs the real binaries.
func SkipIfShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the real binaries: skipped under -short")
	}
}

// Build builds pipelined, pipelined-load and every plugin into one
// temporary directory, the first time a test of the test binary asks, and
// returns that directory. It skips the test under -short and fails it when
// a build fails.
func Build(t testing.TB) string {
	t.Helper()
	SkipIfShort(t)
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "pipelined-harness-")
		if buildErr != nil {
			return
		}
		for pkg, name := range binaries {
			// -buildvcs=auto: record the commit as a go build in a
			// checkout does by default, even where GOFLAGS turns it off.
			cmd := exec.Command("go", "build", "-buildvcs=auto", "-o", filepath.Join(binDir, name), pkg)
			cmd.Dir = Root()
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Bin returns the path of a built binary: "pipelined", "pipelined-load" or
// "pipelined-sink-<plugin>".
func Bin(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(Build(t), name)
}

// Main runs the tests and then removes the binaries [Build] made; it
// returns the exit code for os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	return code
}

// WriteConfig writes text as pipeline.toml in dir and returns its path.
func WriteConfig(t testing.TB, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "pipeline.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
