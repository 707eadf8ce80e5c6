// Package proto is the wire protocol between pipelined and its sink plugins:
// sink.proto and the code generated from it (checked in; `make proto`
// regenerates it). Plugin authors never use it directly: package sdk serves
// it in the plugin, and package protocol is the host's client of it.
package proto
