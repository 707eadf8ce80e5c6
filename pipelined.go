// Package pipelined is a daemon that receives webhooks, keeps every event in
// a durable log, routes each one by rules and delivers it to sinks that run
// as plugin processes.
//
// This root package holds only [DefaultConfig], the reference configuration.
// The daemon is in cmd/pipelined, the domain types in package pipeline.
package pipelined

import "embed"

// DefaultConfig is pipeline.toml at the root of the repository: the
// reference configuration, every key commented, which runs with no external
// service.
//
//go:embed pipeline.toml
var DefaultConfig []byte

// DefaultFiles holds the files that [DefaultConfig] refers to by relative
// path (the CallKaro schema), at the same paths as in the repository, so
// the built-in configuration runs from any directory.
//
//go:embed examples/callkaro/schemas/call_ended.schema.json
var DefaultFiles embed.FS
