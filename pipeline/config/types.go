package config

import (
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// Duration is a time.Duration written as a string: "250ms", "24h", and
// also whole days such as "7d" or "1d12h". Negative durations are refused.
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string with [sdk.ParseDuration].
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := sdk.ParseDuration(string(b))
	d.Duration = v
	return err
}

// MarshalText writes the duration as time.Duration.String does ("24h0m0s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Size is a number of bytes written as a string: "1000" (bytes), "512KiB",
// "1MiB", "1GiB" (powers of 1024) or "1KB", "1MB", "1GB" (powers of 1000).
type Size int64

// UnmarshalText parses a size string with [sdk.ParseSize].
func (s *Size) UnmarshalText(b []byte) error {
	n, err := sdk.ParseSize(string(b))
	*s = Size(n)
	return err
}

// MarshalText writes the size as [sdk.Size] does.
func (s Size) MarshalText() ([]byte, error) { return sdk.Size(s).MarshalText() }
