package pipelined_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSDKStandsAlone keeps the plugin SDK and the shipped plugins free of
// the daemon's internals: a plugin author imports sdk and nothing else of
// ours, and never pulls in badger, expr or toml.
func TestSDKStandsAlone(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "./sdk/...", "./plugins/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/pipelined/pipelined/pipeline",
		"github.com/dgraph-io/badger",
		"github.com/expr-lang/expr",
		"github.com/BurntSushi/toml",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("sdk or plugins depend on %s; they may import only sdk and third-party sink libraries", dep)
			}
		}
	}
}

// TestEveryPackageHasADocComment checks that each package says what it is for.
func TestEveryPackageHasADocComment(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "./...").Output()
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
