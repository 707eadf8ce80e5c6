// Command pipelined-sink-archive is the archive sink of pipelined: it appends
// every event it is given to JSON Lines files, fsyncs before it answers
// delivered, rotates the files by size and age and gzips the rotated ones.
// pipelined starts it; see sink.go for its config keys and file format.
package main

import "github.com/pipelined/pipelined/sdk"

func main() { sdk.Serve(newSink()) }
