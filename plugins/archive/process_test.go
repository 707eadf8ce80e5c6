package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// buildBinary builds pipelined-sink-archive from this package.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the plugin binary; skipped with -short")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to build the plugin: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "pipelined-sink-archive")
	out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestPluginProcess runs the real binary as a go-plugin process, with
// AutoMTLS, and talks to it as the host does.
func TestPluginProcess(t *testing.T) {
	bin := buildBinary(t)

	t.Run("by-hand", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = []string{} // certainly no magic cookie
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
	})

	t.Run("go-plugin", func(t *testing.T) {
		var logs syncBuffer
		client := plugin.NewClient(&plugin.ClientConfig{
			HandshakeConfig:  sdk.Handshake,
			VersionedPlugins: sdk.ClientPlugins(),
			Cmd:              exec.Command(bin),
			AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
			AutoMTLS:         true,
			StartTimeout:     30 * time.Second,
			Logger: hclog.New(&hclog.LoggerOptions{
				Name: "host", Output: &logs, Level: hclog.Info, JSONFormat: true,
			}),
		})
		t.Cleanup(client.Kill)
		rpc, err := client.Client()
		if err != nil {
			t.Fatalf("start plugin: %v", err)
		}
		if v := client.NegotiatedVersion(); v != sdk.ProtocolVersion {
			t.Errorf("NegotiatedVersion = %d, want %d", v, sdk.ProtocolVersion)
		}
		raw, err := rpc.Dispense(sdk.PluginName)
		if err != nil {
			t.Fatalf("dispense: %v", err)
		}
		s := raw.(sdk.Sink)
		ctx := context.Background()

		if err := s.Configure(ctx, []byte(`{"dir": "x", "compress": "bzip2"}`)); err == nil || !strings.Contains(err.Error(), `"compress" = "bzip2"`) {
			t.Errorf("Configure with a bad compress over the wire = %v, want the key named", err)
		}
		dir := filepath.Join(t.TempDir(), "archive")
		configure(t, s, map[string]any{"dir": dir, "max_size": "1KiB"})
		deliverOK(t, s, []sdk.Event{sinktest.NewEvent(1), sinktest.NewEvent(2)})
		closeSink(t, s.(sdk.Closer))
		client.Kill()

		files := list(t, dir)
		if count(files, gzExt) != 1 {
			t.Fatalf("files = %q, want one .jsonl.gz (the batch passed max_size)", files)
		}
		if lines := gunzipLines(t, filepath.Join(dir, files[0])); len(lines) != 2 {
			t.Errorf("archived %d lines, want 2", len(lines))
		}
		// The plugin's sdk.Logger lines reach the host at their own level.
		if !strings.Contains(logs.String(), "archive file rotated") {
			t.Errorf("host log lacks the plugin's Info record \"archive file rotated\":\n%s", logs.String())
		}
	})
}

// syncBuffer is a buffer safe for the host logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
