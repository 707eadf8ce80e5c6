package sdk

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/pipelined/pipelined/sdk/internal/wire"
	pb "github.com/pipelined/pipelined/sdk/proto"
)

func init() {
	wire.ServeConfig = func(s any) *plugin.ServeConfig { return serveConfig(s.(Sink)) }
}

// Serve serves s as a plugin to the pipelined host and returns when the host
// stops the plugin. Call it from main and do nothing else there: the plugin's
// stdout belongs to the go-plugin handshake, so never print to it. Log with
// [Logger]. Run by hand (not by the host), the binary explains that and exits.
func Serve(s Sink) {
	if os.Getenv(wire.Handshake.MagicCookieKey) != wire.Handshake.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a pipelined sink plugin: pipelined starts it when a [[sink]] names it; it is not meant to be run by hand\n", os.Args[0])
		os.Exit(1)
	}
	plugin.Serve(serveConfig(s))
}

// serveConfig returns the go-plugin configuration that serves s. Package
// sinktest reaches it through protocol.ServeConfig to serve a sink
// in-process.
func serveConfig(s Sink) *plugin.ServeConfig {
	return &plugin.ServeConfig{
		HandshakeConfig: wire.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			wire.ProtocolVersion: {wire.PluginName: &sinkPlugin{impl: s}},
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return plugin.DefaultGRPCServer(append(opts, grpc.ForceServerCodecV2(wire.Codec)))
		},
	}
}

// sinkPlugin is the plugin side of the go-plugin glue: it serves impl over
// gRPC. The host side is package protocol's.
type sinkPlugin struct {
	// Plugin is embedded as go-plugin requires; only the gRPC methods are used.
	plugin.Plugin
	impl Sink
}

var _ plugin.GRPCPlugin = (*sinkPlugin)(nil)

// GRPCServer registers the sink service on the plugin's gRPC server.
func (p *sinkPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServer(s, &server{impl: p.impl})
	return nil
}

// GRPCClient is never called: go-plugin asks for a client only on the host
// side, where package protocol provides the plugin set.
func (p *sinkPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk serves sinks only: dispense a sink with package protocol's ClientPlugins")
}
