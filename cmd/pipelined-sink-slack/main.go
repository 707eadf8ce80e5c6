// Command pipelined-sink-slack serves the Slack sink of pipelined (package
// plugins/slack) as a plugin: pipelined starts it when a [[sink]] names
// plugin "slack".
package main

import (
	"github.com/pipelined/pipelined/plugins/slack"
	"github.com/pipelined/pipelined/sdk"
)

func main() { sdk.Serve(slack.New()) }
