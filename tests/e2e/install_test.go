package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// installSteps returns the shell commands of the "## Install" section of
// examples/systemd/README.md: the lines of its indented code blocks.
func installSteps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.Root(), "examples", "systemd", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start, end := strings.Index(text, "\n## Install"), strings.Index(text, "\n## Why")
	if start < 0 || end < start {
		t.Fatalf("examples/systemd/README.md: no \"## Install\" section before \"## Why\"")
	}
	var cmds []string
	for _, line := range strings.Split(text[start:end], "\n") {
		if strings.HasPrefix(line, "       ") && strings.TrimSpace(line) != "" {
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	return cmds
}

// TestSystemdInstallSteps runs the install steps of
// examples/systemd/README.md verbatim into a temporary root: /etc,
// /usr/local/bin and /var/lib/pipelined are rewritten under it, sudo runs
// the command as is, systemctl and journalctl do nothing, systemd-run runs
// its command with the credentials it loads, and `make build` is the
// harness's build. Then `pipelined check` passes on the installed
// file and the installed daemon, run in the unit's WorkingDirectory, serves
// the CallKaro sample into /var/lib/pipelined/data.
func TestSystemdInstallSteps(t *testing.T) {
	bin := harness.Build(t)
	root := t.TempDir()
	steps := installSteps(t)
	for _, want := range []string{"sudo install -m 0755 bin/pipelined bin/pipelined-sink-* /usr/local/bin/", "pipelined check --no-plugins -c /etc/pipelined/pipeline.toml"} {
		found := false
		for _, s := range steps {
			found = found || strings.Contains(s, want)
		}
		if !found {
			t.Fatalf("install steps %q lack %q: the test's premise is gone", steps, want)
		}
	}

	// A scratch clone: the repository's files the steps read, and bin/
	// holding what `make build` would have built.
	work := t.TempDir()
	for _, name := range []string{"pipeline.toml", "examples"} {
		if err := os.Symlink(filepath.Join(harness.Root(), name), filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bin, filepath.Join(work, "bin")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"etc", "usr/local/bin", "etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rooted := regexp.MustCompile(`(^|[\s"'|=:])(/etc/|/usr/local/bin|/var/lib/pipelined)`)
	script := []string{
		"set -e",
		`sudo() { "$@"; }`,
		"make() { :; }",
		"systemctl() { :; }",
		"journalctl() { :; }",
	}
	// systemd-run (no shell function: the name has a hyphen) runs the
	// command after its options, with the credentials of its
	// -p LoadCredential=ID:PATH in a CREDENTIALS_DIRECTORY of its own.
	stubs := t.TempDir()
	if err := os.WriteFile(filepath.Join(stubs, "systemd-run"), []byte(`#!/bin/sh
creds=$(mktemp -d)
while [ $# -gt 0 ]; do
	case $1 in
	-p) case $2 in LoadCredential=*) c=${2#LoadCredential=}; cp "${c#*:}" "$creds/${c%%:*}" ;; esac; shift 2 ;;
	-*) shift ;;
	*) break ;;
	esac
done
CREDENTIALS_DIRECTORY=$creds exec "$@"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		script = append(script, rooted.ReplaceAllString(s, "${1}"+root+"${2}"))
	}
	cmd := exec.Command("sh", "-c", strings.Join(script, "\n"))
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+stubs+":"+filepath.Join(root, "usr/local/bin")+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install steps failed: %v\n%s\nscript:\n%s", err, out, strings.Join(script, "\n"))
	}
	installed := filepath.Join(root, "etc/pipelined/pipeline.toml")
	if !strings.Contains(string(out), installed+": ok") {
		t.Fatalf("the steps' `pipelined check` did not say ok:\n%s", out)
	}

	// check with the plugins, from the installed binary, in another directory.
	daemonBin := filepath.Join(root, "usr/local/bin/pipelined")
	chk := exec.Command(daemonBin, "check", "-c", installed)
	chk.Dir = t.TempDir()
	if out, err := chk.CombinedOutput(); err != nil {
		t.Fatalf("pipelined check -c %s: %v\n%s", installed, err, out)
	}

	// The test's one change: free ports instead of 8080 and 8081, which
	// other tests may hold.
	text, err := os.ReadFile(installed)
	if err != nil {
		t.Fatal(err)
	}
	text = regexp.MustCompile(`(?m)^listen = "127\.0\.0\.1:808[01]"`).ReplaceAll(text, []byte(`listen = "127.0.0.1:0"`))
	if err := os.WriteFile(installed, text, 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(root, "var/lib/pipelined") // StateDirectory=, WorkingDirectory=
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := harness.StartWith(t, installed, harness.Options{Dir: state, Binary: daemonBin})
	if err != nil {
		t.Fatal(err)
	}
	sample, err := os.ReadFile(filepath.Join(harness.Root(), "examples/callkaro/call_ended.json"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := harness.Client.Post(d.URL+"/hooks/callkaro", "application/json", bytes.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var ans struct {
		ID string `json:"id"`
	}
	json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || ans.ID == "" {
		t.Fatalf("POST the CallKaro sample = %d %+v, want 200 with an id", resp.StatusCode, ans)
	}
	harness.WaitArchived(t, filepath.Join(state, "data/archive"), []string{ans.ID}, 20*time.Second)

	// The reference configuration acknowledges an event type it does not
	// handle, so the sender does not retry it.
	code, ignored, err := harness.Post(d.URL+"/hooks/callkaro", []byte(`{"event": "call_started", "data": {"callSid": "ck-new-type"}}`))
	if err != nil || code != http.StatusOK || ignored["ignored"] != true {
		t.Errorf("POST a call_started = %d %v %v, want 200 {\"ignored\": true, …}", code, ignored, err)
	}
	for _, p := range []string{"data/log", "data/events.db"} {
		if _, err := os.Stat(filepath.Join(state, p)); err != nil {
			t.Errorf("%s not under the state directory: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/pipelined/data")); err == nil {
		t.Errorf("the daemon wrote under /etc/pipelined/data; want /var/lib/pipelined only")
	}
}

// TestServeExits78OnConfigError: the unit's RestartPreventExitStatus=78
// holds for serve too, and the message names the base of a relative path.
func TestServeExits78OnConfigError(t *testing.T) {
	dir := t.TempDir()
	file := harness.WriteConfig(t, dir, harness.Listeners("")+harness.CallKaroSource+`schema_file = "schemas/none.json"`+"\n")
	cmd := exec.Command(harness.Bin(t, "pipelined"), "serve", "-c", file)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 78 {
		t.Fatalf("pipelined serve with a missing schema = %v, want exit 78\n%s", err, out)
	}
	if want := "relative paths resolve against " + dir; !strings.Contains(string(out), want) {
		t.Errorf("pipelined serve said:\n%s\nwant it to name the base: %q", out, want)
	}
}

// TestMakeRunTakesConfig: `make run CONFIG=FILE` serves that file.
func TestMakeRunTakesConfig(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "run"}, "pipelined serve -c pipeline.toml"},
		{[]string{"-n", "run", "CONFIG=/tmp/my.toml"}, "pipelined serve -c /tmp/my.toml"},
	} {
		cmd := exec.Command("make", tc.args...)
		cmd.Dir = harness.Root()
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("make %s = %v\n%s\nwant it to run %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}
