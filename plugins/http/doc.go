// Package http is the HTTP sink of pipelined: it forwards every event it is
// given to a URL (a CRM, another service), optionally signed with Standard
// Webhooks, and answers per event from the receiver's status. The binary
// pipelined-sink-http (cmd/pipelined-sink-http) serves it, and pipelined
// starts that; see sink.go for its config keys and behaviour.
package http

import "github.com/pipelined/pipelined/sdk"

// New returns the HTTP sink, unconfigured, for [sdk.Serve]. It also implements
// [sdk.Describer] and [sdk.Closer]; the host calls Configure with the
// sink's config table before the first Deliver.
func New() sdk.Sink { return newSink() }
