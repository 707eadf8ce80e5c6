package sinktest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

// Build builds the plugin in package directory dir ("." for the test's own
// package) as a binary called name in a temporary directory, and returns its
// path. It skips the test under -short, and when no go tool is found.
func Build(t testing.TB, dir, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the plugin binary; skipped with -short")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to build the plugin: %v", err)
	}
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command(gobin, "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, out)
	}
	return bin
}

// StartOptions says how [Start] runs a plugin process.
type StartOptions struct {
	// Env is the process's whole environment; nil inherits the test's. The
	// host gives a plugin only the variables its config names in *_env keys.
	Env []string
	// Logs receives the host side's log: go-plugin's lines and the plugin's
	// own, as JSON (hclog). Nil discards them.
	Logs io.Writer
	// LogLevel is the lowest level logged: "debug", "info" (default), ….
	LogLevel string
}

// Start runs the built plugin at path as pipelined does — go-plugin over
// gRPC with AutoMTLS — and returns its client (to kill it, or read its pid)
// and the sink whose calls cross the wire. The process is killed when the
// test ends.
func Start(t testing.TB, path string, o StartOptions) (*plugin.Client, sdk.Sink) {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Env = o.Env
	if o.Logs == nil {
		o.Logs = io.Discard
	}
	level := hclog.LevelFromString(o.LogLevel)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  protocol.Handshake,
		VersionedPlugins: protocol.ClientPlugins(),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     30 * time.Second,
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "host", Output: o.Logs, Level: level, JSONFormat: true}),
	})
	t.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("start plugin %s: %v", path, err)
	}
	raw, err := rpc.Dispense(protocol.PluginName)
	if err != nil {
		t.Fatalf("dispense plugin %s: %v", path, err)
	}
	s, ok := raw.(sdk.Sink)
	if !ok {
		t.Fatalf("plugin %s dispensed %T, not an sdk.Sink", path, raw)
	}
	return client, s
}

// RunByHand runs the plugin binary at path as a person would: with the
// test's environment but without the handshake cookie the host sets, and fails unless it exits with status 1, says on
// stderr that it is a pipelined sink plugin not meant to be run by hand
// (what [sdk.Serve] prints), and writes nothing to stdout. [RunBinary] runs
// it too.
func RunByHand(t testing.TB, path string) {
	t.Helper()
	cmd := exec.Command(path)
	for _, kv := range os.Environ() { // the test's environment, without the cookie
		if !strings.HasPrefix(kv, protocol.Handshake.MagicCookieKey+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("running the plugin by hand: %v, want exit status 1", err)
	}
	if !strings.Contains(stderr.String(), "pipelined sink plugin") || !strings.Contains(stderr.String(), "not meant to be run by hand") {
		t.Errorf("running the plugin by hand printed %q on stderr, want it to say it is a pipelined plugin started by pipelined", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("running the plugin by hand printed %q on stdout, want nothing", stdout.String())
	}
}
