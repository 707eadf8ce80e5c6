package sdk

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/pipelined/pipelined/sdk/proto"
)

// ProtocolVersion is the version of the wire protocol in sdk/proto. It is
// bumped only when the wire format breaks; the host keeps speaking older
// versions it supports and refuses others with a message naming both sides.
const ProtocolVersion = 1

// PluginName is the name under which a sink is served in the go-plugin
// plugin set.
const PluginName = "sink"

// Handshake is the go-plugin handshake shared by host and plugins. The magic
// cookie only keeps a plugin binary from being run by hand by mistake; it is
// not a security measure.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "PIPELINED_PLUGIN",
	MagicCookieValue: "sink-9f3b6c1e4a7d",
}

// Serve serves s as a plugin to the pipelined host and returns when the host
// stops the plugin. Call it from main and do nothing else there: the plugin's
// stdout belongs to the go-plugin handshake, so never print to it. Log with
// [Logger]. Run by hand (not by the host), the binary explains that and exits.
func Serve(s Sink) {
	if os.Getenv(Handshake.MagicCookieKey) != Handshake.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a pipelined sink plugin: pipelined starts it when a [[sink]] names it; it is not meant to be run by hand\n", os.Args[0])
		os.Exit(1)
	}
	plugin.Serve(ServeConfig(s))
}

// ServeConfig returns the go-plugin configuration that serves s. [Serve]
// uses it; package sinktest uses it to serve a sink in-process.
func ServeConfig(s Sink) *plugin.ServeConfig {
	return &plugin.ServeConfig{
		HandshakeConfig: Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			ProtocolVersion: {PluginName: &Plugin{Impl: s}},
		},
		GRPCServer: plugin.DefaultGRPCServer,
	}
}

// ClientPlugins returns the plugin sets a host offers, by protocol version.
// Dispensing [PluginName] from a client gives a [Sink] (that also implements
// [Closer] and [DescribeClient]) whose calls go to the plugin process.
func ClientPlugins() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {PluginName: &Plugin{}},
	}
}

// Plugin is the go-plugin glue for a [Sink]: on the plugin side it serves
// Impl over gRPC, on the host side it makes a Sink that calls the plugin.
type Plugin struct {
	// Plugin is embedded as go-plugin requires; only the gRPC methods are used.
	plugin.Plugin
	// Impl is the sink served; nil on the host side.
	Impl Sink
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// GRPCServer registers the sink service on the plugin's gRPC server.
func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServer(s, &server{impl: p.Impl})
	return nil
}

// GRPCClient returns a [Sink] whose calls go to the plugin over conn.
func (p *Plugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &client{rpc: pb.NewSinkClient(conn)}, nil
}
