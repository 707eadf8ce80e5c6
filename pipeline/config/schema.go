package config

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pipelined/pipelined/pipeline/rules"
)

// MaxSchemaSize bounds a schema_file.
const MaxSchemaSize = 4 << 20

// SchemaPath returns where the i-th source's schema_file is read from: an
// absolute path as it is, a relative one joined to the directory of the
// configuration file like every relative path ([Config.BaseDir]), so a
// configuration and its schemas move together (and `pipelined test -c
// examples/callkaro/pipeline.toml` works from any directory). The built-in
// configuration reads a relative one from the binary.
func (c *Config) SchemaPath(i int) string {
	p := c.Sources[i].SchemaFile
	if p == "" || filepath.IsAbs(p) || c.files != nil {
		return p
	}
	if c.base == "" {
		return filepath.Join(filepath.Dir(c.File), p)
	}
	return c.Resolve(p)
}

// ReadSchema reads the i-th source's schema_file (see [Config.SchemaPath]).
func (c *Config) ReadSchema(i int) ([]byte, error) {
	p := c.SchemaPath(i)
	var f io.ReadCloser
	var err error
	if c.files != nil && !filepath.IsAbs(p) {
		f, err = c.files.Open(filepath.ToSlash(filepath.Clean(p)))
	} else {
		f, err = os.Open(p)
	}
	if err != nil {
		return nil, c.fileErr(err)
	}
	defer f.Close()
	if st, ok := f.(fs.File); ok {
		if fi, err := st.Stat(); err == nil && fi.IsDir() {
			return nil, fmt.Errorf("%s is a directory, not a JSON Schema file", p)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSchemaSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(data) > MaxSchemaSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, MaxSchemaSize)
	}
	return data, nil
}

// Schema reads and compiles the i-th source's schema_file; nil when it has
// none. A schema that does not compile is an error naming the file.
func (c *Config) Schema(i int) (*rules.Schema, error) {
	if c.Sources[i].SchemaFile == "" {
		return nil, nil
	}
	data, err := c.ReadSchema(i)
	if err != nil {
		return nil, err
	}
	s, err := rules.CompileSchema(c.SchemaPath(i), data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.SchemaPath(i), err)
	}
	return s, nil
}
