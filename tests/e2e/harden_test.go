package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestDataFilesPrivate: with umask 022 and data directories that already
// exist 0755, every file the daemon (Badger, its write-ahead log) and its
// SQLite sink create is 0600 or 0640: webhook bodies are not readable by
// other users.
func TestDataFilesPrivate(t *testing.T) {
	old := syscall.Umask(0o022) // the daemon inherits it
	t.Cleanup(func() { syscall.Umask(old) })
	dir := t.TempDir()
	logDir, dbDir := filepath.Join(dir, "log"), filepath.Join(dir, "db")
	for _, d := range []string{logDir, dbDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := harness.Start(t, harness.WriteConfig(t, dir, callKaroHeader(logDir)+fmt.Sprintf(`
[[sink]]
name = "db"
plugin = "sql"
config = { path = %q }
delivery = { batch_wait = "5ms", backoff_min = "50ms", backoff_max = "200ms" }
`, filepath.Join(dbDir, "events.db"))+harness.AllCallsRoute("db")))
	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("private-1", "interested"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST = %d %v %v, want 200", code, ans, err)
	}
	queuesEmpty(t, d, 20*time.Second)
	if s := d.Sinks(t)["db"]; s.Dead != 0 || s.LastError != "" {
		t.Fatalf("sink db: %+v, want the event delivered", s)
	}
	if _, err := os.Stat(filepath.Join(dbDir, "events.db-wal")); err != nil {
		t.Fatalf("the SQLite sink wrote no WAL: %v; the check would miss it", err)
	}
	for _, root := range []string{logDir, dbDir} {
		n := 0
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			info, err := e.Info()
			if err != nil {
				return nil // a file Badger removed meanwhile
			}
			n++
			if m := info.Mode().Perm(); m&0o037 != 0 {
				t.Errorf("%s has mode %#o, want 0600 or 0640", path, m)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("no file under %s: the check is vacuous", root)
		}
	}
}

// TestDaemonNotDumpable: a process of the daemon's user and capabilities
// (a plugin) cannot read the daemon's /proc/PID/environ, which holds every
// secret, while it can read a plugin's (the premise: the reader is able to
// read a dumpable process of that user). As root, the daemon and the reader
// run without capabilities (setpriv), as a unit with no capabilities would:
// root with CAP_SYS_PTRACE reads any process, dumpable or not.
func TestDaemonNotDumpable(t *testing.T) {
	dir := t.TempDir()
	var noCaps []string // the command prefix that drops every capability
	var o harness.Options
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("running as root without setpriv: cannot drop CAP_SYS_PTRACE to act as a plugin would")
		}
		noCaps = []string{setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"}
		wrapper := filepath.Join(dir, "pipelined-nocaps")
		script := fmt.Sprintf("#!/bin/sh\nexec %s %q \"$@\"\n", strings.Join(noCaps, " "), harness.Bin(t, "pipelined"))
		if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
		o.Binary = wrapper
	}
	o.Env = []string{"PIPELINED_TEST_DAEMON_SECRET=env-secret-31337"}
	d, err := harness.StartWith(t, harness.WriteConfig(t, dir, testConfig(dir)), o)
	if err != nil {
		t.Fatal(err)
	}
	read := func(pid int) ([]byte, error) {
		args := append(append([]string{}, noCaps...), "cat", fmt.Sprintf("/proc/%d/environ", pid))
		cmd := exec.Command(args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%v: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
		return out, nil
	}
	if _, err := read(d.SinkPID(t, "archive")); err != nil {
		t.Fatalf("reading the archive plugin's environ failed (%v): the reader cannot read even a dumpable process, the check would be vacuous", err)
	}
	env, err := read(d.PID())
	if err == nil {
		t.Errorf("read the daemon's /proc/%d/environ (%d bytes, secret shown: %v), want permission denied: the daemon is dumpable",
			d.PID(), len(env), bytes.Contains(env, []byte("env-secret-31337")))
	} else {
		t.Logf("reading the daemon's environ: %v (as wanted)", err)
	}
}

// TestSystemdUnitSecurity: the unit hides other processes and the non-pid
// parts of /proc (ProtectProc=invisible, ProcSubset=pid), and
// `systemd-analyze security` rates it 1.8 or lower (when the tool is
// installed and knows --offline).
func TestSystemdUnitSecurity(t *testing.T) {
	unit, err := os.ReadFile("../../examples/systemd/pipelined.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ProtectProc=invisible", "ProcSubset=pid", "UMask=0077"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).Match(unit) {
			t.Errorf("examples/systemd/pipelined.service lacks %s", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the exposure level is not measured (apt-get install systemd)")
	}
	path := filepath.Join(t.TempDir(), "pipelined.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "security", "--offline=yes", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for pipelined\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Skipf("systemd-analyze security --offline=yes gave no exposure level (%v): a systemd older than 250?\n%s", err, out)
	}
	level, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	if level > 1.8 {
		t.Errorf("systemd-analyze security rates the unit %.1f, want 1.8 or lower:\n%s", level, out)
	}
	t.Logf("systemd-analyze security: exposure level %.1f", level)
}
