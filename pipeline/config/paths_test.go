package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelativePathsResolveAgainstTheFile loads the same file from a
// directory other than the working directory: every relative path lands
// next to the file, and a missing file's error names that directory.
func TestRelativePathsResolveAgainstTheFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(t.TempDir()) // the working directory must not matter
	t.Setenv("PIPELINED_TEST_CRED", filepath.Join(dir, "cred"))
	for name, text := range map[string]string{
		"schemas/s.json": `{"type": "object"}`,
		"secret":         "s3cret\n",
		"cred":           "c\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const src = `
[log]
dir = "data/log"
[plugins]
dirs = ["plugins"]
[[source]]
name = "a"
path = "/a"
auth = { type = "bearer", secret_file = ["secret", "${PIPELINED_TEST_CRED}"] }
schema_file = "schemas/s.json"
`
	file := filepath.Join(dir, "pipeline.toml")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file)
	if err != nil {
		t.Fatalf("Load(%s) = %v, want no error", file, err)
	}
	for _, tc := range []struct{ key, got, want string }{
		{"log.dir", c.Log.Dir, filepath.Join(dir, "data/log")},
		{"plugins.dirs", c.Plugins.Dirs[0], filepath.Join(dir, "plugins")},
		{"secret_file", c.Sources[0].Auth.SecretFile[0], filepath.Join(dir, "secret")},
		{"secret_file ${VAR}", c.Sources[0].Auth.SecretFile[1], "${PIPELINED_TEST_CRED}"},
		{"schema_file", c.SchemaPath(0), filepath.Join(dir, "schemas/s.json")},
		{"BaseDir", c.BaseDir(), dir},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.key, tc.got, tc.want)
		}
	}

	if err := os.Remove(filepath.Join(dir, "schemas/s.json")); err != nil {
		t.Fatal(err)
	}
	_, err = Load(file)
	if err == nil {
		t.Fatalf("Load with the schema missing = nil, want an error")
	}
	want := "relative paths resolve against " + dir + ", the directory of " + file
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "schema_file") {
		t.Errorf("Load with the schema missing = %v, want it to say schema_file and %q", err, want)
	}
}

// TestBuiltInConfigResolvesAgainstWorkingDirectory: the built-in default
// has no file, so its paths stay relative to where pipelined runs.
func TestBuiltInConfigResolvesAgainstWorkingDirectory(t *testing.T) {
	wd := t.TempDir()
	t.Chdir(wd)
	c, err := ParseFS("pipeline.toml (built in)", []byte("[log]\ndir = \"data/log\"\n"), os.DirFS(wd))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Dir != "data/log" || c.BaseDir() != wd {
		t.Errorf("built in: log.dir = %q, BaseDir() = %q; want data/log and %q", c.Log.Dir, c.BaseDir(), wd)
	}
	if note := c.BaseNote(); !strings.Contains(note, "working directory") {
		t.Errorf("BaseNote() = %q, want it to name the working directory", note)
	}
}

// TestExpandFile: a *_file value's environment variables are expanded, and
// one that is not set is named (expanded to nothing, the file would be
// looked for at the wrong path, and the error would point there).
func TestExpandFile(t *testing.T) {
	t.Setenv("PIPELINED_TEST_SECRETS", "/run/secrets")
	t.Setenv("PIPELINED_TEST_EMPTY", "")
	for _, name := range []string{"CREDENTIALS_DIRECTORY", "PIPELINED_TEST_UNSET"} {
		t.Setenv(name, "") // restored after the test
		os.Unsetenv(name)
	}
	for _, tt := range []struct {
		in, want, err string
	}{
		{"/etc/pipelined/secret", "/etc/pipelined/secret", ""},
		{"${PIPELINED_TEST_SECRETS}/callkaro", "/run/secrets/callkaro", ""},
		{"$PIPELINED_TEST_EMPTY/x", "/x", ""}, // set, if empty: as written
		{"${PIPELINED_TEST_UNSET}/x", "", `"${PIPELINED_TEST_UNSET}/x": environment variable PIPELINED_TEST_UNSET is not set`},
		{"${CREDENTIALS_DIRECTORY}/callkaro-secret", "", "environment variable CREDENTIALS_DIRECTORY is not set: systemd sets it for the unit's own processes"},
		{"/a/$$/b", "", `"$" is not a variable name: only $NAME and ${NAME} are expanded`},
		{"${PIPELINED_TEST_SECRETS:-/x}/c", "", `"PIPELINED_TEST_SECRETS:-/x" is not a variable name`},
	} {
		got, err := ExpandFile(tt.in)
		if tt.err == "" && (err != nil || got != tt.want) {
			t.Errorf("ExpandFile(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ExpandFile(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.err)
		}
	}
}
