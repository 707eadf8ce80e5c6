package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// config is the sink's config table as written in pipeline.toml. It is the
// one description of the config: its tags and defaultConfig give Describe,
// and DecodeConfig decodes over the defaults.
type config struct {
	Dir      string       `json:"dir" required:"true" doc:"Directory of the archive files, relative to the daemon's working directory; one directory and prefix per sink."`
	Rotate   sdk.Duration `json:"rotate" doc:"Rotate the current file when it is this old (\"1h\", \"1d\")."`
	MaxSize  sdk.Size     `json:"max_size" doc:"Rotate the current file when it is this big (\"512KiB\", \"1GB\", or bytes)."`
	Compress string       `json:"compress" doc:"What happens to rotated files: \"gzip\" or \"none\"."`
	Prefix   string       `json:"prefix" doc:"Start of every file name: <prefix>-<UTC start>.jsonl."`
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
	if _, set := decodedKeys(raw)["dir"]; set && strings.TrimSpace(c.Dir) == "" {
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

// Describe describes the config keys from the config struct and
// defaultConfig.
func (s *sink) Describe() sdk.Description {
	return sdk.DescribeConfig("Appends events to JSON Lines files, fsynced before delivered, rotated by size and age, rotated files gzipped.", defaultConfig())
}

// decodedKeys returns the keys of a config table (none when it is not one).
func decodedKeys(raw json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	json.Unmarshal(raw, &m)
	return m
}
