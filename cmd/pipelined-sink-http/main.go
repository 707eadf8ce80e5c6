// Command pipelined-sink-http serves the HTTP sink of pipelined (package
// plugins/http) as a plugin: pipelined starts it when a [[sink]] names
// plugin "http".
package main

import (
	"github.com/pipelined/pipelined/plugins/http"
	"github.com/pipelined/pipelined/sdk"
)

func main() { sdk.Serve(http.New()) }
