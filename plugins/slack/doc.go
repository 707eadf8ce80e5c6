// Package slack is the Slack sink of pipelined: it posts one message per
// event to a Slack incoming webhook, built from the route's transform (a
// Block Kit payload), a Go template, or a default summary of a CallKaro
// call_ended event, and honours Slack's 429 Retry-After. The binary
// pipelined-sink-slack (cmd/pipelined-sink-slack) serves it, and pipelined
// starts that; see config.go for its config keys and sink.go for how
// Slack's answers map to results.
package slack

import "github.com/pipelined/pipelined/sdk"

// New returns the Slack sink, unconfigured, for [sdk.Serve]. It also implements
// [sdk.Describer] and [sdk.Closer]; the host calls Configure with the
// sink's config table before the first Deliver.
func New() sdk.Sink { return newSink() }
