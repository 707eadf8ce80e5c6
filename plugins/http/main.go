// Command pipelined-sink-http is the HTTP sink of pipelined: it forwards
// every event it is given to a URL (a CRM, another service), optionally
// signed with Standard Webhooks, and answers per event from the receiver's
// status. pipelined starts it; see sink.go for its config keys and
// behaviour.
package main

import "github.com/pipelined/pipelined/sdk"

func main() { sdk.Serve(newSink()) }
