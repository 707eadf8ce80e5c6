package sdk

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"slices"
	"strings"
	"testing"
)

// authorAPI is every exported top-level name of package sdk: what a sink
// author uses, and nothing of the host's plumbing. A name the host or
// sinktest needs (the handshake, the plugin glue, the client) goes in
// package protocol, where `go doc ./sdk` does not show it; a name an author
// needs is added here.
var authorAPI = []string{
	"Closer", "DecodeConfig", "DescribeConfig", "Delivered", "Describer", "Description",
	"Duration", "ErrWrapUp", "Event", "Field", "Logger", "NotAttempted", "ParseDuration", "ParseSize",
	"Permanent", "Result", "Retry", "Secret", "Serve", "Sink", "Size",
}

// TestOnlyAuthorAPIExported keeps `go doc ./sdk` to what a sink author
// uses: package sdk exports exactly the names in authorAPI.
func TestOnlyAuthorAPIExported(t *testing.T) {
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatalf("parse package sdk: %v", err)
	}
	pkg, ok := pkgs["sdk"]
	if !ok {
		t.Fatalf("parsed packages %v, want sdk", pkgs)
	}
	var got []string
	for _, f := range pkg.Files {
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() {
					got = append(got, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							got = append(got, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								got = append(got, n.Name)
							}
						}
					}
				}
			}
		}
	}
	for _, name := range got {
		if !slices.Contains(authorAPI, name) {
			t.Errorf("package sdk exports %s, which is not in authorAPI: if only pipelined or sinktest needs it, put it in package protocol; if sink authors do, add it to authorAPI", name)
		}
	}
	for _, name := range authorAPI {
		if !slices.Contains(got, name) {
			t.Errorf("authorAPI lists %s, which package sdk does not export: remove it from the list", name)
		}
	}
}
