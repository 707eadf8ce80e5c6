// Command pipelined-sink-slack is the Slack sink of pipelined: it posts one
// message per event to a Slack incoming webhook, built from the route's
// transform (a Block Kit payload), a Go template, or a default summary of a
// CallKaro call_ended event, and honours Slack's 429 Retry-After. pipelined
// starts it; see config.go for its config keys and sink.go for how Slack's
// answers map to results.
package main

import "github.com/pipelined/pipelined/sdk"

func main() { sdk.Serve(newSink()) }
