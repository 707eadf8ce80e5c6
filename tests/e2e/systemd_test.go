package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// fakeSystemd plays systemd's side of the notify protocol: it binds the
// unixgram socket that NOTIFY_SOCKET names and records every datagram.
type fakeSystemd struct {
	path string
	conn *net.UnixConn
	msgs chan sdMessage
}

// sdMessage is one datagram: its KEY=VALUE lines, and when it arrived.
type sdMessage struct {
	at     time.Time
	fields map[string]string
	raw    string
}

func (m sdMessage) has(key, value string) bool { v, ok := m.fields[key]; return ok && v == value }

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	if len(path) >= 108 { // sun_path
		dir, err := os.MkdirTemp("", "sd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		path = filepath.Join(dir, "notify.sock")
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSystemd{path: path, conn: c, msgs: make(chan sdMessage, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			m := sdMessage{at: time.Now(), fields: map[string]string{}, raw: string(buf[:n])}
			for _, line := range strings.Split(m.raw, "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					m.fields[k] = v
				}
			}
			s.msgs <- m
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

// next returns the next message that is not WATCHDOG=1 alone, with the
// watchdog pings received meanwhile.
func (s *fakeSystemd) next(t *testing.T, timeout time.Duration) (sdMessage, []sdMessage) {
	t.Helper()
	var pings []sdMessage
	deadline := time.After(timeout)
	for {
		select {
		case m := <-s.msgs:
			if len(m.fields) == 1 && m.has("WATCHDOG", "1") {
				pings = append(pings, m)
				continue
			}
			return m, pings
		case <-deadline:
			t.Fatalf("systemd heard nothing but %d watchdog pings for %v", len(pings), timeout)
			return sdMessage{}, nil
		}
	}
}

// freePort returns a loopback address that nobody listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startUnderSystemd runs `pipelined serve` as systemd would with
// Type=notify and WatchdogSec=: NOTIFY_SOCKET and WATCHDOG_USEC set. It
// does not wait for readiness: the notify socket says when.
// WATCHDOG_PID is left out, since the pid is not known before exec.
func startUnderSystemd(t *testing.T, configFile, notifySocket string, watchdog time.Duration) *harness.Daemon {
	t.Helper()
	d, err := harness.StartWith(t, configFile, harness.Options{
		Env:    []string{"NOTIFY_SOCKET=" + notifySocket, "WATCHDOG_USEC=" + strconv.FormatInt(watchdog.Microseconds(), 10)},
		NoWait: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestServeSpeaksSystemdNotify checks the sd_notify sequence that a
// Type=notify unit with WatchdogSec= relies on: READY=1 only once the
// daemon serves, WATCHDOG=1 at half the watchdog time, RELOADING=1 then
// READY=1 around a SIGHUP reload, STOPPING=1 then exit 0 on SIGTERM; and
// that the plugins do not inherit the notify socket.
func TestServeSpeaksSystemdNotify(t *testing.T) {
	const watchdog = time.Second // pings every 500 ms: a loaded machine's fsync and scheduling fit in the other half
	dir := t.TempDir()
	ingest, admin := freePort(t), freePort(t)
	cfgText := strings.Replace(testConfig(dir), `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", ingest), 1)
	cfgText = strings.Replace(cfgText, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", admin), 1)
	cfg := harness.WriteConfig(t, dir, cfgText)
	sd := newFakeSystemd(t)
	start := time.Now()
	d := startUnderSystemd(t, cfg, sd.path, watchdog)
	d.URL, d.AdminURL = "http://"+ingest, "http://"+admin

	// 1. Nothing but STATUS= before READY=1, and READY=1 means serving.
	var ready sdMessage
	for {
		m, pings := sd.next(t, 30*time.Second)
		if len(pings) > 0 {
			t.Errorf("WATCHDOG=1 %d times before READY=1, want none before the daemon serves", len(pings))
		}
		if m.has("READY", "1") {
			ready = m
			break
		}
		if _, ok := m.fields["STATUS"]; !ok || len(m.fields) != 1 {
			t.Fatalf("before READY=1 systemd got %q, want at most STATUS= updates", m.raw)
		}
	}
	// The probe runs as soon as READY=1 arrives: the listeners must be bound
	// and the daemon ready, not about to be.
	resp, err := harness.Client.Get(d.AdminURL + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz right after READY=1: %v (the admin listener is not bound yet)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /readyz right after READY=1 = %d, want 200", resp.StatusCode)
	}
	if c, err := net.DialTimeout("tcp", ingest, time.Second); err != nil {
		t.Errorf("ingest listener not bound when READY=1 was sent: %v", err)
	} else {
		c.Close()
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "log")); len(ents) == 0 {
		t.Errorf("READY=1 sent with no event log in %s", filepath.Join(dir, "log"))
	}
	status := ready.fields["STATUS"]
	if status == "" || strings.ContainsAny(status, "\r\n") {
		t.Errorf("READY=1 came with STATUS=%q, want a one-line summary", status)
	}
	t.Logf("READY=1 after %v, STATUS=%s", ready.at.Sub(start).Round(time.Millisecond), status)

	// 2. The plugins do not see the notify socket nor the watchdog.
	pid := d.SinkPID(t, "archive")
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("read the archive plugin's environment: %v", err)
	}
	for _, kv := range bytes.Split(env, []byte{0}) {
		for _, key := range []string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="} {
			if bytes.HasPrefix(kv, []byte(key)) {
				t.Errorf("archive plugin (pid %d) inherited %s: it could speak for the daemon", pid, kv)
			}
		}
	}

	// 3. The watchdog is fed at about half its time while the daemon runs.
	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("sd-1", "interested"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST = %d %v %v, want 200", code, ans, err)
	}
	var pings []time.Time
	last := ready.at
	deadline := time.After(6 * watchdog)
watch:
	for {
		select {
		case m := <-sd.msgs:
			if !m.has("WATCHDOG", "1") {
				if _, ok := m.fields["STATUS"]; ok && len(m.fields) == 1 {
					continue
				}
				t.Fatalf("while running systemd got %q, want WATCHDOG=1 or STATUS=", m.raw)
			}
			if gap := m.at.Sub(last); gap >= watchdog {
				t.Errorf("watchdog ping %v after the previous one, want less than WatchdogSec (%v)", gap.Round(time.Millisecond), watchdog)
			}
			pings = append(pings, m.at)
			last = m.at
		case <-deadline:
			break watch
		}
	}
	if want := 4; len(pings) < want {
		t.Errorf("%d WATCHDOG=1 in %v with WATCHDOG_USEC=%d, want at least %d (every %v)", len(pings), 6*watchdog, watchdog.Microseconds(), want, watchdog/2)
	}

	// 4. SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1.
	d.Signal(syscall.SIGHUP)
	m, _ := sd.next(t, 20*time.Second)
	for len(m.fields) == 1 && m.fields["STATUS"] != "" {
		m, _ = sd.next(t, 20*time.Second)
	}
	if !m.has("RELOADING", "1") {
		t.Fatalf("after SIGHUP systemd got %q, want RELOADING=1", m.raw)
	}
	if _, err := strconv.ParseUint(m.fields["MONOTONIC_USEC"], 10, 64); err != nil {
		t.Errorf("RELOADING=1 came with MONOTONIC_USEC=%q, want CLOCK_MONOTONIC in µs", m.fields["MONOTONIC_USEC"])
	}
	for m, _ = sd.next(t, 20*time.Second); !m.has("READY", "1"); m, _ = sd.next(t, 20*time.Second) {
		if _, ok := m.fields["STATUS"]; !ok || len(m.fields) != 1 {
			t.Fatalf("after RELOADING=1 systemd got %q, want READY=1", m.raw)
		}
	}

	// 5. SIGTERM: STOPPING=1, and nothing says ready again; exit 0.
	d.Signal(syscall.SIGTERM)
	m, _ = sd.next(t, 20*time.Second)
	for len(m.fields) == 1 && m.fields["STATUS"] != "" {
		m, _ = sd.next(t, 20*time.Second)
	}
	if !m.has("STOPPING", "1") {
		t.Fatalf("after SIGTERM systemd got %q, want STOPPING=1", m.raw)
	}
	select {
	case <-d.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("pipelined still runs 30s after SIGTERM")
	}
	if code := d.ExitCode(); code != 0 {
		t.Errorf("pipelined exited %d after SIGTERM, want 0", code)
	}
	for len(sd.msgs) > 0 {
		if m := <-sd.msgs; m.has("READY", "1") || m.has("RELOADING", "1") {
			t.Errorf("after STOPPING=1 systemd got %q", m.raw)
		}
	}
}

// TestSystemdUnitVerifies runs `systemd-analyze verify` on
// examples/systemd/pipelined.service, with the binaries just built in place
// of /usr/local/bin (verify checks that ExecStart= is executable), and on
// the socket activation units with it: pipelined.socket,
// pipelined-admin.socket and the service's drop-in socket-activation.conf
// (its Requires= must find both). Any warning fails: verify exits 0 on
// unknown keys and bad values.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the unit file is not verified (apt-get install systemd)")
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("../../examples/systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unit := bytes.ReplaceAll(read("pipelined.service"), []byte("/usr/local/bin/"), []byte(harness.Build(t)+"/"))
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		units []string
	}{
		{"service", map[string][]byte{"pipelined.service": unit}, []string{"pipelined.service"}},
		{"socket activation", map[string][]byte{
			"pipelined.service":                          unit,
			"pipelined.service.d/socket-activation.conf": read("socket-activation.conf"),
			"pipelined.socket":                           read("pipelined.socket"),
			"pipelined-admin.socket":                     read("pipelined-admin.socket"),
		}, []string{"pipelined.socket", "pipelined-admin.socket", "pipelined.service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range tc.files {
				path := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var paths []string
			for _, u := range tc.units {
				paths = append(paths, filepath.Join(dir, u))
			}
			out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", strings.Join(tc.units, " "), err, out)
			}
		})
	}
}
