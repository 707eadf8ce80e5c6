//go:build !race

// Package race tells whether the race detector is on, so that a test of a
// time bound can allow for the detector's slowdown (2–20×, as the Go
// documentation says) instead of failing or being skipped.
package race

// Enabled is true when built with -race.
const Enabled = false

// Slowdown is how much longer than normal code may take under the race
// detector; a time bound in a test is multiplied by it.
const Slowdown = 1
