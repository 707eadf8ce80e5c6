// Package nodesink_test runs the conformance suite on examples/node-sink,
// a sink written in Node.js, through the same protocol the host speaks.
package nodesink_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// TestTraceContextReachesTheSink: plugin.js hands the event's trace_context
// (proto field 9) to deliver as traceContext, so a Node.js sink can send
// traceparent on to the service it calls; the example writes it down.
func TestTraceContextReachesTheSink(t *testing.T) {
	nodeReady(t)
	bin, err := filepath.Abs("pipelined-sink-node")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "events.jsonl")
	_, s := sinktest.Start(t, bin, sinktest.StartOptions{})
	sinktest.Configure(t, s, map[string]any{"path": out})
	ev := sinktest.NewEvent(1)
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ev.TraceContext = map[string]string{"traceparent": tp, "tracestate": "vendor=1"}
	sinktest.DeliverAll(t, s, []sdk.Event{ev})
	if err := s.(sdk.Closer).Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var line struct {
		ID           string            `json:"id"`
		TraceContext map[string]string `json:"trace_context"`
	}
	if err := json.Unmarshal(b, &line); err != nil {
		t.Fatalf("%s: %v\n%s", out, err, b)
	}
	if line.ID != ev.ID || line.TraceContext["traceparent"] != tp || line.TraceContext["tracestate"] != "vendor=1" {
		t.Errorf("the sink wrote %s, want event %s with trace_context %v", b, ev.ID, ev.TraceContext)
	}
}

// nodeReady installs the sink's npm packages (npm ci, from
// package-lock.json) unless they are there. It skips the test when node
// or npm is missing, except under CI, where .ci/run installs them: there a
// missing node fails the test.
func nodeReady(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed, and CI must run the Node.js sink's tests: .ci/run installs nodejs and npm", tool)
			}
			t.Skipf("%s is not installed: skipping the Node.js sink (Debian: apt-get install nodejs npm)", tool)
		}
	}
	lock, err := os.Stat("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	if inst, err := os.Stat(filepath.Join("node_modules", ".package-lock.json")); err == nil && !inst.ModTime().Before(lock.ModTime()) {
		return
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in examples/node-sink: %v\n%s", err, out)
	}
}

// TestConformance runs sinktest.RunBinary on the Node.js plugin: the
// handshake, AutoMTLS, the health check, Configure (unknown keys named),
// Describe (and that Configure takes every key it lists), batches of 1 to
// 1000 events, redelivery, cancellation, Close, and nothing on stdout
// after the handshake.
func TestConformance(t *testing.T) {
	nodeReady(t)
	bin, err := filepath.Abs("pipelined-sink-node")
	if err != nil {
		t.Fatal(err)
	}
	sinktest.RunBinary(t, bin, json.RawMessage(`{"path": "`+filepath.Join(t.TempDir(), "events.jsonl")+`"}`))
}
