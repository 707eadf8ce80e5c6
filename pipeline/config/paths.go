package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The rule for relative paths, one for the whole file: a relative path in
// pipeline.toml (log.dir, schema_file, secret_file, token_file, the TLS
// and NATS files, plugins.dirs, and the paths in a sink's config table,
// since plugins run in that directory) is relative to the directory of the
// configuration file. The built-in default configuration has no file: its
// paths are relative to the working directory. Environment variables
// (${CREDENTIALS_DIRECTORY}) are expanded before the path is judged.

// BaseDir returns the directory relative paths in this configuration
// resolve against: the absolute directory of the configuration file, or
// the working directory for the built-in configuration.
func (c *Config) BaseDir() string {
	if c.base != "" {
		return c.base
	}
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	return wd
}

// BaseNote says which base relative paths used, for error messages about
// a missing file.
func (c *Config) BaseNote() string {
	if c.base == "" {
		return fmt.Sprintf("relative paths resolve against the working directory %s (built-in configuration)", c.BaseDir())
	}
	return fmt.Sprintf("relative paths resolve against %s, the directory of %s", c.base, c.File)
}

// Resolve returns p with environment variables expanded, joined to
// [Config.BaseDir] when it is relative. An empty p stays empty.
func (c *Config) Resolve(p string) string {
	if strings.TrimSpace(p) == "" || c.base == "" {
		return p
	}
	if filepath.IsAbs(os.ExpandEnv(p)) {
		return p
	}
	return filepath.Join(c.base, p)
}

// ExpandFile returns the file name p (a *_file key's value) with its
// environment variables expanded, or an error naming the first one that is
// not set: expanded to nothing, "${CREDENTIALS_DIRECTORY}/secret" would
// name /secret, and the file would be looked for in the wrong place.
func ExpandFile(p string) (string, error) {
	var unset, bad string
	out := os.Expand(p, func(name string) string {
		if !validName(name) {
			if bad == "" {
				bad = name
			}
			return ""
		}
		v, ok := os.LookupEnv(name)
		if !ok && unset == "" {
			unset = name
		}
		return v
	})
	switch {
	case bad != "":
		return "", fmt.Errorf("%q: %q is not a variable name: only $NAME and ${NAME} are expanded (no $$, no ${NAME:-default})", p, bad)
	case unset == "CREDENTIALS_DIRECTORY":
		return "", fmt.Errorf("%q: environment variable CREDENTIALS_DIRECTORY is not set: systemd sets it for the unit's own processes, from its LoadCredential= lines (to check the file as the unit sees it, run the check under systemd-run -p LoadCredential=…: see examples/systemd)", p)
	case unset != "":
		return "", fmt.Errorf("%q: environment variable %s is not set", p, unset)
	}
	return out, nil
}

// validName reports whether name is an environment variable's name as
// ExpandFile takes it: letters, digits and underscores, not starting with
// a digit.
func validName(name string) bool {
	for i, r := range name {
		if r != '_' && !('a' <= r && r <= 'z') && !('A' <= r && r <= 'Z') && (i == 0 || !('0' <= r && r <= '9')) {
			return false
		}
	}
	return name != ""
}

// fileErr wraps err, from reading the file the key names, with the base
// relative paths used when the file is missing.
func (c *Config) fileErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (%s)", err, c.BaseNote())
	}
	return err
}

// resolvePaths rewrites every relative path of the host's keys to an
// absolute one (see [Config.BaseDir]), so that serve, check and the
// plugins agree whatever the working directory. schema_file is resolved
// when read ([Config.SchemaPath]), since the built-in configuration reads
// it from the binary.
func (c *Config) resolvePaths() {
	c.Log.Dir = c.Resolve(c.Log.Dir)
	c.Log.CredsFile = c.Resolve(c.Log.CredsFile)
	c.Log.NKeyFile = c.Resolve(c.Log.NKeyFile)
	c.Log.TLSCAFile = c.Resolve(c.Log.TLSCAFile)
	c.Log.TLSCertFile = c.Resolve(c.Log.TLSCertFile)
	c.Log.TLSKeyFile = c.Resolve(c.Log.TLSKeyFile)
	c.Server.TLSCertFile = c.Resolve(c.Server.TLSCertFile)
	c.Server.TLSKeyFile = c.Resolve(c.Server.TLSKeyFile)
	c.Admin.TokenFile = c.Resolve(c.Admin.TokenFile)
	c.Telemetry.HeadersFile = c.Resolve(c.Telemetry.HeadersFile)
	c.Telemetry.TLSCAFile = c.Resolve(c.Telemetry.TLSCAFile)
	c.Telemetry.TLSCertFile = c.Resolve(c.Telemetry.TLSCertFile)
	c.Telemetry.TLSKeyFile = c.Resolve(c.Telemetry.TLSKeyFile)
	for i, d := range c.Plugins.Dirs {
		c.Plugins.Dirs[i] = c.Resolve(d)
	}
	for i, s := range c.Sinks {
		if strings.ContainsRune(s.Command, filepath.Separator) {
			c.Sinks[i].Command = c.Resolve(s.Command)
		}
	}
	for i := range c.Sources {
		for j, f := range c.Sources[i].Auth.SecretFile {
			c.Sources[i].Auth.SecretFile[j] = c.Resolve(f)
		}
	}
}
