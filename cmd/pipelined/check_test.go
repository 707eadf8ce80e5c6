package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfigErrorExit78(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pipeline.toml")
	if err := os.WriteFile(file, []byte("[server]\nlisten = 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runPipelined(t, "check", "-c", file)
	if code != 78 || errOut == "" {
		t.Errorf("check of an invalid file: exit %d, stderr %q; want 78 and the problem", code, errOut)
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
