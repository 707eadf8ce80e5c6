package archive

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// TestPluginProcess runs the real binary as a go-plugin process, with
// AutoMTLS, and talks to it as the host does.
func TestPluginProcess(t *testing.T) {
	bin := sinktest.Build(t, "../../cmd/pipelined-sink-archive", "pipelined-sink-archive")

	t.Run("by-hand", func(t *testing.T) { sinktest.RunByHand(t, bin) })

	t.Run("go-plugin", func(t *testing.T) {
		var logs testlog.Buffer
		client, s := sinktest.Start(t, bin, sinktest.StartOptions{Logs: &logs})
		if v := client.NegotiatedVersion(); v != protocol.ProtocolVersion {
			t.Errorf("NegotiatedVersion = %d, want %d", v, protocol.ProtocolVersion)
		}
		ctx := context.Background()

		if err := s.Configure(ctx, []byte(`{"dir": "x", "compress": "bzip2"}`)); err == nil || !strings.Contains(err.Error(), `"compress" = "bzip2"`) {
			t.Errorf("Configure with a bad compress over the wire = %v, want the key named", err)
		}
		dir := filepath.Join(t.TempDir(), "archive")
		sinktest.Configure(t, s, map[string]any{"dir": dir, "max_size": "1KiB"})
		sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(1), sinktest.NewEvent(2)})
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
