package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
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

// String writes the size as MarshalText does: "16MiB".
func (s Size) String() string {
	b, _ := s.MarshalText()
	return string(b)
}

// StringList is one string or an array of strings: secret_env = "A" or
// secret_env = ["NEW", "OLD"].
type StringList []string

// UnmarshalTOML implements toml.Unmarshaler.
func (l *StringList) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*l = StringList{v}
		return nil
	case []any:
		out := make(StringList, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("want a string or an array of strings, got an array holding %T", e)
			}
			out = append(out, s)
		}
		*l = out
		return nil
	}
	return fmt.Errorf("want a string or an array of strings, got %T", v)
}

// Rate is a number of events per unit of time: "100/s", "6000/m", "10/h".
type Rate struct {
	// PerSecond is the rate; 0 means no limit.
	PerSecond float64
	text      string
}

// UnmarshalText parses a rate.
func (r *Rate) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "" {
		*r = Rate{}
		return nil
	}
	num, unit, ok := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[strings.TrimSpace(unit)]
	if !ok || err != nil || per == 0 || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return fmt.Errorf("invalid rate %q (write e.g. \"100/s\", \"6000/m\" or \"10/h\")", s)
	}
	*r = Rate{PerSecond: n / per, text: s}
	return nil
}

// MarshalText writes the rate as it was given.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.text), nil }
