// Package wire holds what package sdk (the plugin side) and package
// protocol (the host side) must share but neither can take from the other:
// sdk cannot import protocol, which imports sdk for its types. It has the
// go-plugin handshake and a hook through which protocol reaches the sdk's
// unexported gRPC server. Nothing outside sdk/... may use it; the host uses
// package protocol, which re-exports the handshake.
package wire

import "github.com/hashicorp/go-plugin"

// ProtocolVersion is the version of the wire protocol in sdk/proto. It is
// bumped only when the wire format breaks.
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

// ServeConfig returns the go-plugin configuration that serves sink, which
// must be an sdk.Sink. Package sdk sets it when it is initialised (a package
// that imports protocol imports sdk, so it is set before any use); sdk.Serve
// and protocol.ServeConfig both call it, so there is one plugin-side path.
var ServeConfig func(sink any) *plugin.ServeConfig
