// Package archive is the archive sink of pipelined: it appends every event
// it is given to JSON Lines files, fsyncs before it answers delivered,
// rotates the files by size and age and gzips the rotated ones. The binary
// pipelined-sink-archive (cmd/pipelined-sink-archive) serves it, and
// pipelined starts that; see sink.go for its config keys and file format.
package archive

import "github.com/pipelined/pipelined/sdk"

// New returns the archive sink, unconfigured, for [sdk.Serve]. It also implements
// [sdk.Describer] and [sdk.Closer]; the host calls Configure with the
// sink's config table before the first Deliver.
func New() sdk.Sink { return newSink() }
