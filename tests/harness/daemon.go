package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// Daemon is a running `pipelined serve`. The test's cleanup kills it with
// SIGKILL if it still runs, and logs its stderr when the test failed.
type Daemon struct {
	// Cmd is the process.
	Cmd *exec.Cmd
	// URL is the ingest listener's base URL and AdminURL the admin
	// API's, as the daemon logged them when it was ready; empty with
	// [Options.NoWait].
	URL, AdminURL string
	// Ready is the time from the start to "pipelined is ready".
	Ready time.Duration

	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
}

// Options are the ways to start a daemon other than the default.
type Options struct {
	// Env is added to the test process's environment.
	Env []string
	// NoWait returns as soon as the process started, without waiting for
	// "pipelined is ready" (a test that watches the start itself).
	NoWait bool
	// Within is how long the daemon has to get ready. Zero means 60s.
	Within time.Duration
	// Dir is the daemon's working directory. Empty: the config file's.
	Dir string
	// Binary is the pipelined binary to run. Empty: the one [Build] made.
	Binary string
	// Sockets are passed to the daemon as systemd's socket activation
	// passes them: from fd 3 on, in order, with LISTEN_FDS, LISTEN_FDNAMES
	// and LISTEN_PID (the daemon's own pid: sh sets it, then execs
	// pipelined). The test keeps its listeners open, as systemd would.
	Sockets []Socket
}

// Socket is a listening socket for [Options.Sockets] and the name its
// socket unit's FileDescriptorName= would give it.
type Socket struct {
	Name     string
	Listener *net.TCPListener
}

// maxLog bounds the stderr a Daemon keeps.
const maxLog = 8 << 20

// Start runs `pipelined serve -c configFile -log-format json` in the
// config file's directory and waits until it is ready; it fails the test
// when the daemon exits or is not ready in time.
func Start(t testing.TB, configFile string) *Daemon {
	t.Helper()
	d, err := StartWith(t, configFile, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// StartWith is [Start] with options, returning the error instead of
// failing the test (the daemon, when it was started, is still killed at
// the test's end).
func StartWith(t testing.TB, configFile string, o Options) (*Daemon, error) {
	t.Helper()
	bin := Bin(t, "pipelined")
	if o.Binary != "" {
		bin = o.Binary
	}
	if o.Within <= 0 {
		o.Within = 60 * time.Second
	}
	start := time.Now()
	cmd := exec.Command(bin, "serve", "-c", configFile, "-log-format", "json")
	if len(o.Sockets) > 0 {
		var files []*os.File
		names := make([]string, len(o.Sockets))
		for i, s := range o.Sockets {
			f, err := s.Listener.File() // a copy, the child's fd 3+i
			if err != nil {
				return nil, fmt.Errorf("socket %s: %w", s.Name, err)
			}
			defer f.Close() // the child has its own once started
			files = append(files, f)
			names[i] = s.Name
		}
		script := fmt.Sprintf(`export LISTEN_PID=$$ LISTEN_FDS=%d LISTEN_FDNAMES=%s; exec "$0" "$@"`, len(names), strings.Join(names, ":"))
		cmd = exec.Command("/bin/sh", append([]string{"-c", script}, cmd.Args...)...)
		cmd.ExtraFiles = files
	}
	cmd.Dir = filepath.Dir(configFile)
	if o.Dir != "" {
		cmd.Dir = o.Dir
	}
	cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), o.Env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pipelined: %w", err)
	}
	d := &Daemon{Cmd: cmd, exited: make(chan struct{})}
	ready := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			d.mu.Lock()
			if d.stderr.Len() < maxLog {
				d.stderr.Write(line)
				d.stderr.WriteByte('\n')
			}
			d.mu.Unlock()
			var rec struct {
				Msg    string `json:"msg"`
				Ingest string `json:"ingest"`
				Admin  string `json:"admin"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "pipelined is ready" {
				select {
				case ready <- [2]string{rec.Ingest, rec.Admin}:
				default: // ready again after a reload
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.Kill(syscall.SIGKILL)
		if t.Failed() {
			log := d.Log()
			if len(log) > 20000 {
				log = "…" + log[len(log)-20000:]
			}
			t.Logf("pipelined (pid %d) log:\n%s", d.PID(), log)
		}
	})
	if o.NoWait {
		return d, nil
	}
	select {
	case addrs := <-ready:
		d.URL, d.AdminURL = "http://"+addrs[0], "http://"+addrs[1]
		d.Ready = time.Since(start)
		return d, nil
	case <-d.exited:
		return d, fmt.Errorf("pipelined exited before it was ready:\n%s", d.Log())
	case <-time.After(o.Within):
		return d, fmt.Errorf("pipelined not ready after %v:\n%s", o.Within, d.Log())
	}
}

// Log returns what the daemon wrote to stderr so far.
func (d *Daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// WaitLog waits until the daemon logged msg at least n times.
func (d *Daemon) WaitLog(t testing.TB, msg string, n int, within time.Duration) {
	t.Helper()
	Eventually(t, within, func() error {
		if got := strings.Count(d.Log(), msg); got < n {
			return fmt.Errorf("the daemon logged %q %d times, want %d", msg, got, n)
		}
		return nil
	})
}

// PID returns the daemon's process id.
func (d *Daemon) PID() int { return d.Cmd.Process.Pid }

// Exited is closed when the process has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Alive reports whether the process still runs.
func (d *Daemon) Alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig and returns at once.
func (d *Daemon) Signal(sig syscall.Signal) { d.Cmd.Process.Signal(sig) }

// Kill sends sig and waits for the process to exit; after 30s it sends
// SIGKILL.
func (d *Daemon) Kill(sig syscall.Signal) {
	if !d.Alive() {
		return
	}
	d.Cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.Cmd.Process.Kill()
		<-d.exited
	}
}

// ExitCode returns the exit code of a process that has exited.
func (d *Daemon) ExitCode() int { return d.Cmd.ProcessState.ExitCode() }

// Metric returns the value of one series of the daemon's /metrics (the
// name and its labels as the exposition writes them, e.g.
// `pipelined_sink_up{sink="crm"}`), "" when it is absent.
func (d *Daemon) Metric(t testing.TB, series string) string {
	t.Helper()
	resp, err := Client.Get(d.AdminURL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// Admin returns a client of the daemon's admin API, without a token.
func (d *Daemon) Admin() *admin.Client { return admin.NewClient(d.AdminURL, "", Client) }

// CLI runs `pipelined ARGS --admin URL` against the daemon and returns its
// output; a non-zero exit fails the test.
func (d *Daemon) CLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(Bin(t, "pipelined"), append(args, "--admin", d.AdminURL)...).CombinedOutput()
	if err != nil {
		t.Fatalf("pipelined %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// SinkPID returns the pid of a sink's plugin (0 while it restarts).
func (d *Daemon) SinkPID(t testing.TB, sink string) int {
	t.Helper()
	s, err := d.Admin().Sink(t.Context(), sink)
	if err != nil {
		t.Fatal(err)
	}
	return s.PID
}

// Sinks returns the status of every sink by name, with its counts: after a
// start it waits (up to a minute) for the queues to be rebuilt.
func (d *Daemon) Sinks(t testing.TB) map[string]admin.SinkStatus {
	t.Helper()
	// The counts are known once the queues are rebuilt after a start:
	// until then /v1/sinks says "rebuilding" and gives none.
	ss, err := d.Admin().Sinks(t.Context())
	for deadline := time.Now().Add(time.Minute); err == nil && rebuilding(ss) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		ss, err = d.Admin().Sinks(t.Context())
	}
	if err != nil {
		t.Fatal(err)
	}
	if rebuilding(ss) {
		t.Fatal("the sinks' queues were still being rebuilt a minute after the start")
	}
	out := make(map[string]admin.SinkStatus, len(ss))
	for _, s := range ss {
		out[s.Name] = s
	}
	return out
}

func rebuilding(ss []admin.SinkStatus) bool {
	return slices.ContainsFunc(ss, func(s admin.SinkStatus) bool { return s.Rebuilding })
}

// DeadLetters returns every dead letter of sink.
func (d *Daemon) DeadLetters(t testing.TB, sink string) []admin.DeadLetter {
	t.Helper()
	dls, err := d.Admin().AllDeadLetters(t.Context(), sink)
	if err != nil {
		t.Fatal(err)
	}
	return dls
}
