package sinktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

// RunBinary runs the conformance suite of [Run] on a built plugin binary:
// each check starts path as its own process through go-plugin, as the host
// does (the process inherits the test's environment, so set the variables
// its *_env keys name with t.Setenv), with config as its config table.
//
// On top of Run's checks, it runs [RunByHand], and it fails when the plugin writes anything to its
// standard output other than the go-plugin handshake line: before the
// handshake a stray line breaks the start, after it the host throws it
// away. Both what goes to os.Stdout (which go-plugin's Serve redirects) and
// what reaches file descriptor 1 directly are caught. A panic the process
// reports on stderr fails the check during which it died, with the stack.
// Build the binary in
// the test, e.g. with `go build -o` into t.TempDir().
func RunBinary(t *testing.T, path string, config json.RawMessage) {
	t.Helper()
	t.Run("by-hand", func(t *testing.T) { RunByHand(t, path) })
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			for _, err := range c.execBinary(t, path, config) {
				t.Error(err)
			}
		})
	}
}

// execBinary starts path and runs the check on it, then reports stray
// output on stdout.
func (c check) execBinary(t testing.TB, path string, config json.RawMessage) []error {
	t.Helper()
	sink, out, err := startBinary(t, path)
	if err != nil {
		return append([]error{err}, out.stderr.panicked()...)
	}
	errs := c.run(target{sink: sink}, config)
	if len(errs) > 0 {
		// A call that failed may be a panic whose report is still on its
		// way through the stderr pipe.
		for deadline := time.Now().Add(2 * time.Second); out.stderr.panicked() == nil && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	errs = append(errs, out.stderr.panicked()...)
	return append(errs, out.check()...)
}

// stdout collects what a plugin process writes to stdout after the
// handshake line.
type stdout struct {
	mu        sync.Mutex
	handshake bool // the first line has been read
	stray     bytes.Buffer
	kill      func()
	// stderr is the plugin's standard error, as the tail of it and the
	// panic it reports, if any.
	stderr *tail
}

// Write takes what the plugin wrote to os.Stdout after Serve (go-plugin's
// SyncStdout).
func (s *stdout) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stray.Write(p)
	return len(p), nil
}

// raw records the process's stdout as read by go-plugin: all but the
// first line is stray.
func (s *stdout) raw(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.handshake {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return
		}
		s.handshake = true
		p = p[i+1:]
	}
	s.stray.Write(p)
}

// check stops the plugin (so that what it wrote has arrived) and reports
// stray output.
func (s *stdout) check() []error {
	// Output written by the plugin's last calls is still on its way over
	// the stdio stream; give it a moment.
	time.Sleep(100 * time.Millisecond)
	s.kill()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stray.Len() == 0 {
		return nil
	}
	out := s.stray.String()
	if len(out) > 300 {
		out = out[:300] + "..."
	}
	return []error{fmt.Errorf("the plugin wrote %d bytes to stdout after the handshake: %q; stdout belongs to go-plugin: log with sdk.Logger (stderr) instead", s.stray.Len(), out)}
}

// startBinary starts path as a plugin process and returns the host's view
// of its sink and its stdout. The process is killed when the test ends.
func startBinary(t testing.TB, path string) (sdk.Sink, *stdout, error) {
	t.Helper()
	stderr := &tail{}
	out := &stdout{stderr: stderr}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  protocol.Handshake,
		VersionedPlugins: protocol.ClientPlugins(),
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
			cmd := exec.Command(path)
			cmd.Env, cmd.Stdin = spec.Env, spec.Stdin
			return newTeeRunner(cmd, out)
		},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     10 * time.Second,
		SyncStdout:       out,
		Stderr:           stderr,
		Logger:           quietLogger(),
	})
	out.kill = client.Kill
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		out.mu.Lock()
		printed := out.stray.String()
		out.mu.Unlock()
		if printed != "" || strings.Contains(err.Error(), "Unrecognized remote plugin message") {
			return nil, out, fmt.Errorf("start plugin %s: it printed to stdout before the handshake (stdout belongs to go-plugin: print nothing before or after sdk.Serve): %v", path, err)
		}
		return nil, out, fmt.Errorf("start plugin %s: %v%s", path, err, stderr.last())
	}
	raw, err := rpc.Dispense(protocol.PluginName)
	if err != nil {
		return nil, out, fmt.Errorf("plugin %s: dispense %q: %v", path, protocol.PluginName, err)
	}
	sink, ok := raw.(sdk.Sink)
	if !ok {
		return nil, out, fmt.Errorf("plugin %s: dispensed %T, want an sdk.Sink", path, raw)
	}
	return sink, out, nil
}

// tail keeps the end of the plugin's stderr for error messages, and what
// follows a Go panic's "panic: " line (its value and every goroutine's
// stack), up to maxPanic bytes.
type tail struct {
	mu    sync.Mutex
	buf   []byte
	panic []byte
}

// maxPanic bounds the panic report kept from a plugin's stderr.
const maxPanic = 64 << 10

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.panic == nil {
		if i := bytes.Index(p, []byte("panic: ")); i >= 0 && (i == 0 || p[i-1] == '\n') {
			w.panic = append([]byte{}, p[i:min(len(p), i+maxPanic)]...)
		}
	} else if room := maxPanic - len(w.panic); room > 0 {
		w.panic = append(w.panic, p[:min(len(p), room)]...)
	}
	w.buf = append(w.buf, p...)
	if n := len(w.buf) - 1024; n > 0 {
		w.buf = w.buf[n:]
	}
	return len(p), nil
}

// panicked returns the panic the plugin reported on stderr as an error,
// nil when it reported none.
func (w *tail) panicked() []error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.panic == nil {
		return nil
	}
	return []error{fmt.Errorf("the plugin process panicked (the host restarts it, and the events are delivered again):\n%s", w.panic)}
}

func (w *tail) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := bytes.TrimSpace(w.buf); len(s) > 0 {
		return fmt.Sprintf("; its stderr ends with %q", s)
	}
	return ""
}

// teeRunner runs a plugin process as go-plugin's own command runner does,
// but shows the test everything the process writes to stdout.
type teeRunner struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr io.ReadCloser
}

var _ runner.Runner = (*teeRunner)(nil)

func newTeeRunner(cmd *exec.Cmd, out *stdout) (*teeRunner, error) {
	so, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	se, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	return &teeRunner{cmd: cmd, stdout: teeReader{so, out}, stderr: se}, nil
}

type teeReader struct {
	io.ReadCloser
	out *stdout
}

func (r teeReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 {
		r.out.raw(p[:n])
	}
	return n, err
}

func (r *teeRunner) Start(context.Context) error { return r.cmd.Start() }
func (r *teeRunner) Wait(context.Context) error  { return r.cmd.Wait() }
func (r *teeRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}
func (r *teeRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *teeRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *teeRunner) Name() string          { return r.cmd.Path }
func (r *teeRunner) ID() string {
	if r.cmd.Process == nil {
		return ""
	}
	return strconv.Itoa(r.cmd.Process.Pid)
}
func (r *teeRunner) Diagnose(context.Context) string { return "" }
func (r *teeRunner) PluginToHost(n, a string) (string, string, error) {
	return n, a, nil
}
func (r *teeRunner) HostToPlugin(n, a string) (string, string, error) {
	return n, a, nil
}
