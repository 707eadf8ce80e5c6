// Command pipelined-sink-archive serves the archive sink of pipelined (package
// plugins/archive) as a plugin: pipelined starts it when a [[sink]] names
// plugin "archive".
package main

import (
	"github.com/pipelined/pipelined/plugins/archive"
	"github.com/pipelined/pipelined/plugins/pluginmain"
)

func main() { pluginmain.Serve(archive.New()) }
