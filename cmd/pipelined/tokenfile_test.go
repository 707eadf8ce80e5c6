package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCredentialTokenFileFromAShell: a config whose admin token_file is a
// systemd credential (as examples/systemd shows) cannot name the token
// outside the unit; the CLI says so and how to name the file instead, and
// --token-file reaches the daemon.
func TestCredentialTokenFileFromAShell(t *testing.T) {
	srv, _, _ := adminServer(t)
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	os.Unsetenv("CREDENTIALS_DIRECTORY")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pipeline.toml")
	listen := strings.TrimPrefix(srv.URL, "http://")
	toml := "[admin]\nlisten = \"" + listen + "\"\ntoken_file = \"${CREDENTIALS_DIRECTORY}/admin-token\"\n"
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runPipelined(t, "sinks", "-c", cfg)
	if code != 1 || !strings.Contains(stderr, "CREDENTIALS_DIRECTORY is not set") || !strings.Contains(stderr, "outside the unit, name the token's own file: --token-file FILE") {
		t.Fatalf("sinks -c (credential token_file, no CREDENTIALS_DIRECTORY) = %d, stderr:\n%s", code, stderr)
	}
	// Another variable unset is not a credential: no such hint.
	other := filepath.Join(dir, "other.toml")
	if err := os.WriteFile(other, []byte("[admin]\nlisten = \""+listen+"\"\ntoken_file = \"${PIPELINED_TEST_UNSET_DIR}/admin-token\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runPipelined(t, "sinks", "-c", other); code != 1 || !strings.Contains(stderr, "PIPELINED_TEST_UNSET_DIR") || strings.Contains(stderr, "outside the unit") {
		t.Fatalf("sinks -c (token_file under another unset variable) = %d, stderr:\n%s", code, stderr)
	}
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(cliToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runPipelined(t, "sinks", "-c", cfg, "--token-file", tokenFile); code != 0 || !strings.Contains(stdout, "archive") {
		t.Fatalf("sinks -c … --token-file = %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
