package sinktest

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

// Serve serves s in-process over the same go-plugin gRPC protocol the host
// uses with a plugin process, and returns the host's view of it: a
// [sdk.Sink] whose calls cross the wire, which also implements [sdk.Closer]
// and [protocol.DescribeClient].
// Every call is encoded, sent over a local socket and decoded on both sides,
// so Serve finds what a plain method call would hide (results that do not
// survive the wire, errors that lose their message).
//
// A panic in one of the sink's methods fails t with the panic's value and
// stack (the call returns an error), instead of killing the test binary.
//
// Serve does not call Close on the sink; a test that wants the sink's
// resources released calls it, as the host would. The connection and the
// server are torn down when the test ends, via t.Cleanup.
func Serve(t testing.TB, s sdk.Sink) sdk.Sink {
	t.Helper()

	ctx, cancel := context.WithCancel(context.Background())
	reattach := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})

	cfg := protocol.ServeConfig(guarded(t, s))
	cfg.Logger = quietLogger()
	cfg.Test = &plugin.ServeTestConfig{
		Context:          ctx,
		ReattachConfigCh: reattach,
		CloseCh:          closed,
	}
	go plugin.Serve(cfg)

	var rc *plugin.ReattachConfig
	select {
	case rc = <-reattach:
	case <-closed:
		cancel()
		t.Fatalf("sinktest.Serve: the plugin server stopped before it listened")
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("sinktest.Serve: the plugin server did not listen within 10s")
	}

	// On reattach go-plugin does not pick the plugin set from
	// VersionedPlugins (it negotiates only when it starts the process), so
	// name the set of the version the server speaks.
	set, ok := protocol.ClientPlugins()[rc.ProtocolVersion]
	if !ok {
		cancel()
		t.Fatalf("sinktest.Serve: the plugin speaks protocol version %d, package protocol has no client for it", rc.ProtocolVersion)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  protocol.Handshake,
		VersionedPlugins: protocol.ClientPlugins(),
		Plugins:          set,
		Reattach:         rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           quietLogger(),
	})
	t.Cleanup(func() {
		client.Kill()
		cancel()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Errorf("sinktest.Serve: the plugin server did not stop within 10s of the test's end")
		}
	})

	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("sinktest.Serve: connect to the plugin: %v", err)
	}
	raw, err := rpc.Dispense(protocol.PluginName)
	if err != nil {
		t.Fatalf("sinktest.Serve: dispense %q: %v", protocol.PluginName, err)
	}
	sink, ok := raw.(sdk.Sink)
	if !ok {
		t.Fatalf("sinktest.Serve: dispensed %T, want an sdk.Sink", raw)
	}
	return sink
}

// quietLogger keeps go-plugin's own trace logging out of test output; the
// sink's logs (sdk.Logger) still go to standard error.
func quietLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "sinktest", Level: hclog.Off})
}
