package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigErrorExit78: check exits 78 on a configuration it
// cannot use; a problem in the file reads file:line: what, as a linter's,
// and a file that cannot be read names the command, as serve's does.
func TestCheckConfigErrorExit78(t *testing.T) {
	dir := t.TempDir()
	invalid := filepath.Join(dir, "pipeline.toml")
	if err := os.WriteFile(invalid, []byte("[server]\nlisten = 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.toml")
	for _, tt := range []struct{ file, want string }{
		{invalid, invalid + ":2: server.listen: incompatible types"},
		{missing, "pipelined check: read config: open " + missing + ": no such file or directory"},
	} {
		code, _, errOut := runPipelined(t, "check", "-c", tt.file)
		if code != 78 || !strings.HasPrefix(errOut, tt.want) {
			t.Errorf("check -c %s: exit %d, stderr %q; want 78 and %q", tt.file, code, errOut, tt.want)
		}
	}
}

// TestServeConfigErrorExit78: serve exits 78 too, so the unit's
// RestartPreventExitStatus=78 holds; the message names the base directory
// of a relative path that is missing.
func TestServeConfigErrorExit78(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pipeline.toml")
	text := "[[source]]\nname = \"a\"\npath = \"/a\"\nauth = { type = \"none\" }\nschema_file = \"schemas/missing.json\"\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runPipelined(t, "serve", "-c", file)
	if code != 78 || !strings.Contains(errOut, "relative paths resolve against "+dir) {
		t.Errorf("serve of a file with a missing schema: exit %d, stderr %q; want 78 naming %s", code, errOut, dir)
	}
}

// TestCheckNoPluginsFindsTheBinaries: without starting the plugins, check
// still finds each sink's binary and checks its pinned sha256, and warns
// of a binary that is missing or not the one pinned (which the start would
// fail on) without failing: --no-plugins also lints a file where the
// plugins are not installed.
func TestCheckNoPluginsFindsTheBinaries(t *testing.T) {
	bin, err := os.Executable() // some executable: the test binary
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256(b))
	missing := filepath.Join(t.TempDir(), "pipelined-sink-gone")
	for _, tt := range []struct {
		name, sink string
		code       int
		want       string
	}{
		{"found, not pinned", fmt.Sprintf("command = %q", bin), 0, "sink s: plugin " + bin + " found, not started (no sha256 pinned)"},
		{"found, pinned", fmt.Sprintf("command = %q\nsha256 = %q", bin, sum), 0, "found, not started (sha256 matches)"},
		{"missing", fmt.Sprintf("command = %q", missing), 0, `warning: sink "s": plugin command ` + missing + ": stat " + missing + ": no such file or directory (serve would refuse to start)"},
		{"another binary", fmt.Sprintf("command = %q\nsha256 = %q", bin, strings.Repeat("ab", 32)), 0, "has sha256 " + sum + ", but the sink's sha256 is " + strings.Repeat("ab", 32)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "pipeline.toml")
			text := "[[source]]\nname = \"a\"\npath = \"/a\"\nauth = { type = \"none\" }\n\n[[sink]]\nname = \"s\"\n" + tt.sink + "\n"
			if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runPipelined(t, "check", "--no-plugins", "-c", file)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Errorf("check --no-plugins: exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, tt.code, tt.want)
			}
		})
	}
}
