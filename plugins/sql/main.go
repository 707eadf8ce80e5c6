// Command pipelined-sink-sql is the SQL sink of pipelined: it stores every
// event it is given as a row of a table, in an SQLite file (pure Go, the
// default) or in PostgreSQL, idempotent on the event id, with optional
// columns mapped from the payload. pipelined starts it; see sink.go for its
// config keys, table layout and delivery rules.
package main

import "github.com/pipelined/pipelined/sdk"

func main() { sdk.Serve(newSink()) }
