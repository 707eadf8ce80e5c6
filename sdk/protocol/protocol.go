// Package protocol is the protocol between pipelined and a sink plugin: the
// go-plugin handshake, the protocol versions spoken, and the host's client
// of the Sink service in sdk/proto, which turns every call into gRPC and
// back. Plugin authors do not import it (they import sdk and call
// sdk.Serve); pipelined (pipeline/pluginhost) and package sinktest do.
//
// A host starts a plugin with a go-plugin client whose HandshakeConfig is
// [Handshake] and whose VersionedPlugins are [ClientPlugins], and dispenses
// [PluginName]: that gives an [sdk.Sink] whose calls cross the wire, which
// also implements [sdk.Closer], [DescribeClient] and [WrapUpClient].
package protocol

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/internal/wire"
	pb "github.com/pipelined/pipelined/sdk/proto"
)

// ProtocolVersion is the version of the wire protocol in sdk/proto that
// this sdk serves. It is bumped only when the wire format breaks; the host
// keeps speaking older versions it supports (see [ClientPlugins]) and
// refuses others with a message naming both sides.
const ProtocolVersion = wire.ProtocolVersion

// PluginName is the name under which a sink is served in the go-plugin
// plugin set ("sink"): what a host dispenses.
const PluginName = wire.PluginName

// Handshake is the go-plugin handshake shared by host and plugins. The magic
// cookie only keeps a plugin binary from being run by hand by mistake; it is
// not a security measure.
var Handshake = wire.Handshake

// ClientPlugins returns the plugin sets a host offers, by protocol version.
// Dispensing [PluginName] from a client gives an [sdk.Sink] (that also
// implements [sdk.Closer] and [DescribeClient]) whose calls go to the plugin
// process.
func ClientPlugins() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {PluginName: &hostPlugin{}},
	}
}

// ServeConfig returns the go-plugin configuration that serves s as
// [sdk.Serve] does. Package sinktest uses it to serve a sink in-process
// (with ServeConfig.Test set); a host's tests use it to serve a test sink
// under another protocol version.
func ServeConfig(s sdk.Sink) *plugin.ServeConfig {
	return wire.ServeConfig(s)
}

// hostPlugin is the host side of the go-plugin glue: it makes a Sink that
// calls the plugin. The plugin side is package sdk's.
type hostPlugin struct {
	// Plugin is embedded as go-plugin requires; only the gRPC methods are used.
	plugin.Plugin
}

var _ plugin.GRPCPlugin = (*hostPlugin)(nil)

// GRPCServer is never called: go-plugin serves only on the plugin side,
// where sdk.Serve provides the plugin set.
func (*hostPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errAsServer
}

// GRPCClient returns an [sdk.Sink] whose calls go to the plugin over conn.
func (*hostPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &client{rpc: pb.NewSinkClient(conn)}, nil
}
