// Package sql is the SQL sink of pipelined: it stores every event it is
// given as a row of a table, in an SQLite file (pure Go, the default) or in
// PostgreSQL, idempotent on the event id, with optional columns mapped from
// the payload. The binary pipelined-sink-sql (cmd/pipelined-sink-sql)
// serves it, and pipelined starts that; see sink.go for its config keys,
// table layout and delivery rules.
package sql

import "github.com/pipelined/pipelined/sdk"

// New returns the SQL sink, unconfigured, for [sdk.Serve]. It also implements
// [sdk.Describer] and [sdk.Closer]; the host calls Configure with the
// sink's config table before the first Deliver.
func New() sdk.Sink { return newSink() }
