package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// config is the sink's config table as written in pipeline.toml.
type config struct {
	// Dir holds the archive files; relative paths are relative to the
	// daemon's working directory. Required.
	Dir string `json:"dir"`
	// Rotate is the age at which the current file is rotated, a Go duration.
	Rotate string `json:"rotate"`
	// MaxSize is the size at which the current file is rotated: a string
	// with a unit ("64MiB", "512KiB", "1GB") or a number of bytes.
	MaxSize json.RawMessage `json:"max_size"`
	// Compress is what happens to rotated files: "gzip" or "none".
	Compress string `json:"compress"`
	// Prefix starts every file name.
	Prefix string `json:"prefix"`
}

// settings is a validated config.
type settings struct {
	dir     string
	rotate  time.Duration
	maxSize int64
	gzip    bool
	prefix  string
}

func defaultConfig() config {
	return config{
		Rotate:   "1h",
		MaxSize:  json.RawMessage(`"64MiB"`),
		Compress: "gzip",
		Prefix:   "events",
	}
}

// parseConfig decodes raw over the defaults and validates it, reporting
// every problem, each naming its key and the fix. It has no side effects.
func parseConfig(raw json.RawMessage) (settings, error) {
	c := defaultConfig()
	if err := sdk.DecodeConfig(raw, &c); err != nil {
		return settings{}, err
	}
	var s settings
	var errs []error

	s.dir = c.Dir
	if strings.TrimSpace(c.Dir) == "" {
		errs = append(errs, errors.New(`config key "dir" is required: set it to the directory for archive files, e.g. dir = "data/archive"`))
	}

	d, err := time.ParseDuration(c.Rotate)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf(`config key "rotate" = %q is not a duration: use a Go duration such as "1h" or "15m"`, c.Rotate))
	case d <= 0:
		errs = append(errs, fmt.Errorf(`config key "rotate" = %q must be positive, e.g. "1h"`, c.Rotate))
	}
	s.rotate = d

	n, err := parseSize(c.MaxSize)
	if err != nil {
		errs = append(errs, fmt.Errorf(`config key "max_size" = %s: %w`, c.MaxSize, err))
	}
	s.maxSize = n

	switch c.Compress {
	case "gzip":
		s.gzip = true
	case "none":
	default:
		errs = append(errs, fmt.Errorf(`config key "compress" = %q: use "gzip" or "none"`, c.Compress))
	}

	s.prefix = c.Prefix
	if c.Prefix == "" || c.Prefix == "." || c.Prefix == ".." || strings.ContainsAny(c.Prefix, `/\`+"\x00") {
		errs = append(errs, fmt.Errorf(`config key "prefix" = %q must be a plain file name part without slashes, e.g. "events"`, c.Prefix))
	}
	return s, errors.Join(errs...)
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// parseSize reads a size: a JSON number of bytes, or a string holding a
// number with an optional unit (B, KB, MB, GB, TB in powers of 1000; KiB,
// MiB, GiB, TiB in powers of 1024).
func parseSize(raw json.RawMessage) (int64, error) {
	const fix = `use a size such as "64MiB", "512KiB", "1GB" or a number of bytes`
	raw = bytes.TrimSpace(raw)
	text := string(raw)
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, fmt.Errorf("not a size: %s", fix)
		}
	}
	text = strings.TrimSpace(text)
	i := strings.IndexFunc(text, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(text)
	}
	num, unit := text[:i], strings.ToLower(strings.TrimSpace(text[i:]))
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q: %s", text[i:], fix)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("not a size: %s", fix)
	}
	bytes := v * float64(mult)
	if bytes < 1 || bytes > math.MaxInt64/2 {
		return 0, fmt.Errorf("out of range: %s", fix)
	}
	return int64(bytes), nil
}
