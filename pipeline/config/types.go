package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a string: "250ms", "24h", and
// also whole days such as "7d" or "1d12h". Negative durations are refused.
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return errors.New(`empty duration (write e.g. "30s", "24h" or "7d")`)
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 32)
		if err != nil {
			return fmt.Errorf("invalid duration %q (write e.g. \"30s\", \"24h\" or \"7d\")", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			s = "0s"
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (write e.g. \"30s\", \"24h\" or \"7d\")", string(b))
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", string(b))
	}
	d.Duration = days + v
	return nil
}

// MarshalText writes the duration as time.Duration.String does ("24h0m0s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Size is a number of bytes written as a string: "1000" (bytes), "512KiB",
// "1MiB", "1GiB" (powers of 1024) or "1KB", "1MB", "1GB" (powers of 1000).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// UnmarshalText parses a size string.
func (s *Size) UnmarshalText(b []byte) error {
	str := strings.TrimSpace(string(b))
	num, mult := str, 1.0
	for _, u := range sizeUnits {
		if len(str) > len(u.suffix) && strings.EqualFold(str[len(str)-len(u.suffix):], u.suffix) {
			num, mult = strings.TrimSpace(str[:len(str)-len(u.suffix)]), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("invalid size %q (write e.g. \"1MiB\", \"512KiB\" or \"1000\" for bytes)", str)
	}
	v := f * mult
	if v < 0 || v > math.MaxInt64/2 {
		return fmt.Errorf("size %q out of range", str)
	}
	*s = Size(math.Round(v))
	return nil
}

// MarshalText writes the size in bytes, or in KiB/MiB/GiB when exact.
func (s Size) MarshalText() ([]byte, error) {
	n := int64(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return []byte(strconv.FormatInt(n/u.mult, 10) + u.suffix), nil
		}
	}
	return []byte(strconv.FormatInt(n, 10)), nil
}
