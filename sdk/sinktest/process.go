package sinktest

import (
	"io"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pipelined/pipelined/sdk"
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
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.ClientPlugins(),
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
	raw, err := rpc.Dispense(sdk.PluginName)
	if err != nil {
		t.Fatalf("dispense plugin %s: %v", path, err)
	}
	s, ok := raw.(sdk.Sink)
	if !ok {
		t.Fatalf("plugin %s dispensed %T, not an sdk.Sink", path, raw)
	}
	return client, s
}
