package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// config is the sink's config table as written in pipeline.toml.
type config struct {
	// Dir holds the archive files; relative paths are relative to the
	// daemon's working directory. Required.
	Dir string `json:"dir"`
	// Rotate is the age at which the current file is rotated ("1h", "1d").
	Rotate sdk.Duration `json:"rotate"`
	// MaxSize is the size at which the current file is rotated: a string
	// with a unit ("64MiB", "512KiB", "1GB") or a number of bytes.
	MaxSize sdk.Size `json:"max_size"`
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
		Rotate:   sdk.Duration(time.Hour),
		MaxSize:  64 << 20,
		Compress: "gzip",
		Prefix:   "events",
	}
}

// parseConfig decodes raw over the defaults and validates it, reporting
// every problem, each naming its key and the fix. It has no side effects.
func parseConfig(raw json.RawMessage) (settings, error) {
	c := defaultConfig()
	var s settings
	var errs []error
	if err := sdk.DecodeConfig(raw, &c); err != nil {
		errs = append(errs, err) // and go on: report every problem at once
	}

	s.dir = c.Dir
	if strings.TrimSpace(c.Dir) == "" {
		errs = append(errs, errors.New(`config key "dir" is required: set it to the directory for archive files, e.g. dir = "data/archive"`))
	}

	s.rotate = time.Duration(c.Rotate)
	if s.rotate <= 0 {
		errs = append(errs, fmt.Errorf(`config key "rotate" must be positive, e.g. "1h"`))
	}
	s.maxSize = int64(c.MaxSize)
	if s.maxSize < 1 {
		errs = append(errs, fmt.Errorf(`config key "max_size" must be at least 1 byte, e.g. "64MiB"`))
	}

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

var _ sdk.Describer = (*sink)(nil)

// Describe describes the config keys; the defaults are those of
// defaultConfig, written as in pipeline.toml.
func (s *sink) Describe() sdk.Description {
	d := defaultConfig()
	maxSize, _ := d.MaxSize.MarshalText()
	return sdk.Description{
		Summary: "Appends events to JSON Lines files, fsynced before delivered, rotated by size and age, rotated files gzipped.",
		Fields: []sdk.Field{
			{Name: "dir", Type: "string", Required: true,
				Doc: "Directory of the archive files, relative to the daemon's working directory; one directory and prefix per sink."},
			{Name: "rotate", Type: "duration", Default: `"1h"`, // TestDescribe checks it is defaultConfig's
				Doc: `Rotate the current file when it is this old ("1h", "1d").`},
			{Name: "max_size", Type: "size", Default: fmt.Sprintf("%q", maxSize),
				Doc: `Rotate the current file when it is this big ("512KiB", "1GB", or bytes).`},
			{Name: "compress", Type: "string", Default: fmt.Sprintf("%q", d.Compress),
				Doc: `What happens to rotated files: "gzip" or "none".`},
			{Name: "prefix", Type: "string", Default: fmt.Sprintf("%q", d.Prefix),
				Doc: "Start of every file name: <prefix>-<UTC start>.jsonl."},
		},
	}
}
