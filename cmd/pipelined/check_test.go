package main

import (
	"os"
	"path/filepath"
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
