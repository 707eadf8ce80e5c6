package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes in a sink's config, written as a string with a
// unit — "64MiB", "512KiB", "1GiB" (powers of 1024), "1KB", "1MB", "1GB"
// (powers of 1000) — or as a plain number of bytes. Use it as a field type
// with [DecodeConfig].
type Size int64

// Duration is a length of time in a sink's config, written as a Go duration
// string ("250ms", "1h30m") or with whole days ("7d", "1d12h"). Use it as a
// field type with [DecodeConfig].
type Duration time.Duration

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// ParseSize reads a size such as "64MiB", "1GB" or "1000" (bytes).
// Units are case-insensitive.
func ParseSize(s string) (int64, error) {
	str := strings.TrimSpace(s)
	num, mult := str, 1.0
	lower := strings.ToLower(str)
	for _, u := range sizeUnits {
		if len(lower) > len(u.suffix) && strings.HasSuffix(lower, u.suffix) {
			num, mult = strings.TrimSpace(str[:len(str)-len(u.suffix)]), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid size %q (write e.g. \"64MiB\", \"512KiB\", \"1GB\" or a number of bytes)", s)
	}
	v := f * mult
	if v < 0 || v > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return int64(math.Round(v)), nil
}

// ParseDuration reads a duration such as "250ms", "24h", "7d" or "1d12h".
// Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	const fix = `(write e.g. "30s", "24h" or "7d")`
	str := strings.TrimSpace(s)
	if str == "" {
		return 0, errors.New("empty duration " + fix)
	}
	var days time.Duration
	if i := strings.IndexByte(str, 'd'); i > 0 {
		n, err := strconv.ParseUint(str[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q %s", s, fix)
		}
		days = time.Duration(n) * 24 * time.Hour
		str = str[i+1:]
		if str == "" {
			str = "0s"
		}
	}
	v, err := time.ParseDuration(str)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q %s", s, fix)
	}
	if v < 0 {
		return 0, fmt.Errorf("negative duration %q %s", s, fix)
	}
	return days + v, nil
}

// UnmarshalText implements encoding.TextUnmarshaler with [ParseSize].
func (s *Size) UnmarshalText(b []byte) error {
	n, err := ParseSize(string(b))
	*s = Size(n)
	return err
}

// UnmarshalJSON accepts a string with a unit or a number of bytes.
func (s *Size) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		return s.UnmarshalText([]byte(str))
	}
	return s.UnmarshalText(b)
}

// MarshalText writes the size in GiB, MiB or KiB when exact, else in bytes.
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

// UnmarshalText implements encoding.TextUnmarshaler with [ParseDuration].
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// MarshalText writes the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
