package pipelined_test

import (
	"bytes"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSDKStandsAlone keeps the plugin SDK and the shipped plugins free of
// the daemon's internals: a plugin author imports sdk and nothing else of
// ours, and never pulls in badger, expr or toml. The sinks' one-line mains
// (cmd/pipelined-sink-<name>) are held to the same rule.
func TestSDKStandsAlone(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "github.com/pipelined/pipelined/sdk/...", "./plugins/...", "./cmd/pipelined-sink-...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/pipelined/pipelined/pipeline",
		"github.com/dgraph-io/badger",
		"github.com/expr-lang/expr",
		"github.com/BurntSushi/toml",
	}
	deps := strings.Fields(string(out))
	// A pattern that matches nothing is only a warning to go list: check
	// that every one of them was listed.
	for _, want := range []string{"sdk/protocol", "plugins/archive", "cmd/pipelined-sink-archive"} {
		if !slices.Contains(deps, "github.com/pipelined/pipelined/"+want) {
			t.Errorf("go list -deps did not list %s: update the patterns", want)
		}
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("sdk or plugins depend on %s; they may import only sdk and third-party sink libraries", dep)
			}
		}
	}
}

// TestSDKModuleGraph: the sdk is a module of its own whose module graph
// (what every plugin module built against it pulls in, before the plugin's
// own dependencies) holds none of the daemon's: badger, NATS, expr, TOML.
// tests/e2e's TestTutorialOutsideTheRepository checks the same in a plugin
// module made from the tutorial, outside the repository.
func TestSDKModuleGraph(t *testing.T) {
	cmd := exec.Command("go", "list", "-m", "all")
	cmd.Dir = "sdk"
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -m all in sdk/: %v\n%s", err, out)
	}
	mods := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(mods) == 0 || mods[0] != "github.com/pipelined/pipelined/sdk" {
		t.Fatalf("go list -m all in sdk/ starts with %q, want the module github.com/pipelined/pipelined/sdk", mods[0])
	}
	for _, m := range mods[1:] {
		for _, f := range []string{"github.com/dgraph-io/badger", "github.com/nats-io/", "github.com/expr-lang/expr", "github.com/BurntSushi/toml", "github.com/pipelined/pipelined "} {
			if strings.HasPrefix(m, f) {
				t.Errorf("the sdk module's graph holds %s: a plugin would pull it in", m)
			}
		}
	}
}

// TestEveryPackageHasADocComment checks that each package says what it is for.
func TestEveryPackageHasADocComment(t *testing.T) {
	// ./... stops at the sdk's own go.mod: list that module's packages too.
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "./...", "github.com/pipelined/pipelined/sdk/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dir := range strings.Fields(string(out)) {
		pkgs, err := parser.ParseDir(token.NewFileSet(), dir, func(fi fs.FileInfo) bool {
			return !strings.HasSuffix(fi.Name(), "_test.go")
		}, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatalf("parse %s: %v", dir, err)
		}
		for name, pkg := range pkgs {
			documented := false
			for _, f := range pkg.Files {
				if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
					documented = true
				}
			}
			if !documented {
				wd, _ := filepath.Abs(".")
				rel, _ := filepath.Rel(wd, dir)
				t.Errorf("package %s (%s) has no package doc comment", name, rel)
			}
		}
	}
}

// maxTrackedSize bounds a file in git: build output and data dumps stay out.
const maxTrackedSize = 1 << 20

// TestNoBuildOutputInGit fails when a file git tracks is an executable
// binary (ELF, Mach-O, PE) or larger than 1 MiB: `make build` writes to
// bin/, which .gitignore keeps out, and a `go build` at the root must never
// be committed again. There is no exception today; name one here, with why,
// if one is ever needed.
func TestNoBuildOutputInGit(t *testing.T) {
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git checkout (git ls-files: %v)", err)
	}
	magics := [][]byte{
		[]byte("\x7fELF"),        // Linux
		{0xcf, 0xfa, 0xed, 0xfe}, // Mach-O 64-bit
		{0xfe, 0xed, 0xfa, 0xcf},
		{0xca, 0xfe, 0xba, 0xbe}, // Mach-O universal
		[]byte("MZ"),             // Windows PE
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		fi, err := os.Lstat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or a symlink
		}
		if fi.Size() > maxTrackedSize {
			t.Errorf("%s is %d bytes, more than %d: keep build output and large data out of git", name, fi.Size(), maxTrackedSize)
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 4)
		n, _ := io.ReadFull(f, head)
		f.Close()
		for _, m := range magics {
			if bytes.HasPrefix(head[:n], m) {
				t.Errorf("%s is an executable binary: build output goes to bin/ (make build), never into git", name)
				break
			}
		}
	}
}
