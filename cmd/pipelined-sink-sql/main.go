// Command pipelined-sink-sql serves the SQL sink of pipelined (package
// plugins/sql) as a plugin: pipelined starts it when a [[sink]] names
// plugin "sql".
package main

import (
	"github.com/pipelined/pipelined/plugins/pluginmain"
	"github.com/pipelined/pipelined/plugins/sql"
)

func main() { pluginmain.Serve(sql.New()) }
