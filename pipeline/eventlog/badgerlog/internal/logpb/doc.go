// Package logpb holds the protobuf records of the event log (record.proto).
// Regenerate with `make proto`.
package logpb
