// Package nodesink_test runs the conformance suite on examples/node-sink,
// a sink written in Node.js, through the same protocol the host speaks.
package nodesink_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
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

// TestResultsCrossTheWire: each answer a Node.js sink can give reaches the
// host as the SDK's result of that kind, with its delay and its error; a
// sink whose deliver answers per event, one of each, shows every mapping
// of plugin.js's toResult at once.
func TestResultsCrossTheWire(t *testing.T) {
	nodeReady(t)
	lib, err := filepath.Abs("plugin.js")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "pipelined-sink-answers")
	src := `#!/usr/bin/env node
'use strict';
const { serve } = require(` + strconv.Quote(lib) + `);
const answers = [
  { outcome: 'delivered' },
  { outcome: 'retry', error: 'busy', retryAfterMs: 2500 },
  { outcome: 'permanent', error: 'refused' },
  { outcome: 'not_attempted', error: 'out of time', retryAfterMs: 1500 },
];
serve({ configure() {}, deliver(events) { return events.map((e, i) => answers[i % answers.length]); } });
`
	if err := os.WriteFile(bin, []byte(src), 0o755); err != nil {
		t.Fatal(err)
	}
	_, s := sinktest.Start(t, bin, sinktest.StartOptions{})
	sinktest.Configure(t, s, map[string]any{})
	batch := []sdk.Event{sinktest.NewEvent(1), sinktest.NewEvent(2), sinktest.NewEvent(3), sinktest.NewEvent(4)}
	res, err := s.Deliver(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(batch) {
		t.Fatalf("got %d results for %d events: %v", len(res), len(batch), res)
	}
	if !res[0].IsDelivered() {
		t.Errorf("result 0 is %v, want delivered", res[0])
	}
	if after, ok := res[1].IsRetry(); !ok || after != 2500*time.Millisecond || res[1].Err() == nil || res[1].Err().Error() != "busy" {
		t.Errorf("result 1 is %v, want a retry after 2.5s with error busy", res[1])
	}
	if !res[2].IsPermanent() || res[2].Err() == nil || res[2].Err().Error() != "refused" {
		t.Errorf("result 2 is %v, want permanent with error refused", res[2])
	}
	if after, ok := res[3].IsNotAttempted(); !ok || after != 1500*time.Millisecond || res[3].Err() == nil || res[3].Err().Error() != "out of time" {
		t.Errorf("result 3 is %v, want not attempted, due again after 1.5s, with error out of time", res[3])
	}
}

// TestWrapUpCrossesTheWire: plugin.js answers the host's WrapUp by
// aborting the signal of the deliver in flight, with the sdk's reason,
// and the sink's answer for what it did arrives on the Deliver call.
func TestWrapUpCrossesTheWire(t *testing.T) {
	nodeReady(t)
	lib, err := filepath.Abs("plugin.js")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "pipelined-sink-wraps")
	src := `#!/usr/bin/env node
'use strict';
const { serve } = require(` + strconv.Quote(lib) + `);
serve({
  configure() {},
  deliver(events, signal) {
    return new Promise((resolve) => signal.addEventListener('abort', () => resolve(events.map((e, i) =>
      i === 0 ? { outcome: 'delivered' } : { outcome: 'not_attempted', error: signal.reason.message }))));
  },
});
`
	if err := os.WriteFile(bin, []byte(src), 0o755); err != nil {
		t.Fatal(err)
	}
	_, s := sinktest.Start(t, bin, sinktest.StartOptions{})
	sinktest.Configure(t, s, map[string]any{})
	wc, ok := s.(protocol.WrapUpClient)
	if !ok {
		t.Fatalf("%T is no protocol.WrapUpClient", s)
	}
	type answer struct {
		res []sdk.Result
		err error
	}
	answered := make(chan answer, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		res, err := s.Deliver(ctx, []sdk.Event{sinktest.NewEvent(1), sinktest.NewEvent(2)})
		answered <- answer{res, err}
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var a answer
wait:
	for {
		select {
		case a = <-answered:
			break wait
		case <-tick.C: // until the call reached the plugin
			if _, err := wc.WrapUp(ctx); err != nil {
				t.Fatalf("WrapUp = %v", err)
			}
		}
	}
	if a.err != nil || len(a.res) != 2 || !a.res[0].IsDelivered() {
		t.Fatalf("Deliver = %v, %v; want delivered, not attempted", a.res, a.err)
	}
	if _, na := a.res[1].IsNotAttempted(); !na || a.res[1].Err() == nil || a.res[1].Err().Error() != sdk.ErrWrapUp.Error() {
		t.Errorf("result 1 = %v, want not attempted: %v", a.res[1], sdk.ErrWrapUp)
	}
}
