package sql

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pipelined/pipelined/sdk"
)

// config is the sink's config table as written in pipeline.toml, and the
// one description of it: Describe is built from its tags and defaultConfig.
type config struct {
	// Driver is "sqlite" (the default, an embedded file) or "postgres".
	Driver string `json:"driver" doc:"\"sqlite\" (a pure Go embedded database file) or \"postgres\"."`
	// Path is the SQLite database file (sqlite only); relative paths are
	// relative to the daemon's working directory. Empty means defaultPath
	// (for sqlite only, so the default is in a tag).
	Path string `json:"path" default:"\"data/events.db\"" doc:"SQLite only: the database file, created with its directory at the first delivery; relative to the daemon's working directory."`
	// DSN is the PostgreSQL DSN, read by DecodeConfig from dsn_env or
	// dsn_file; never accepted inline (it holds a password).
	DSN string `json:"dsn" secret:"true" doc:"PostgreSQL only, required there: the connection string (postgres://user:pass@host:5432/db?sslmode=verify-full), read from dsn_env or dsn_file, never inline."`
	// Table is the table the events go to.
	Table string `json:"table" doc:"The table, created if missing at the first delivery: id TEXT PRIMARY KEY, source, route, received_at, payload, inserted_at, plus the mapped columns. A plain identifier, used exactly as written."`
	// Schema is the PostgreSQL schema of the table (postgres only).
	Schema string `json:"schema" doc:"PostgreSQL only: the schema of the table (created if missing); default the connection's current schema."`
	// Columns maps extra column names to dot paths into the payload.
	Columns map[string]string `json:"columns" doc:"Extra columns filled from dot paths into the delivered payload (the route's transform output when there is one), e.g. { call_sid = \"data.callSid\" }; a missing path stores NULL. Missing columns are added to an existing table."`
	// ColumnTypes gives some of Columns a type other than text.
	ColumnTypes map[string]string `json:"column_types" doc:"Types of mapped columns: text (the default; non-strings stored as their JSON text), integer, real, boolean or json (JSONB on PostgreSQL); a value that does not fit fails that event permanently."`
	// BusyTimeout is how long SQLite waits for a lock held by another
	// connection before the batch fails (and is retried by the host).
	BusyTimeout sdk.Duration `json:"busy_timeout" doc:"SQLite only: how long a delivery waits for a lock held by another connection before the batch fails and is retried."`
}

const (
	driverSQLite   = "sqlite"
	driverPostgres = "postgres"

	defaultPath        = "data/events.db"
	defaultTable       = "events"
	defaultBusyTimeout = 5 * time.Second
)

func defaultConfig() config {
	return config{
		Driver:      driverSQLite,
		Table:       defaultTable,
		BusyTimeout: sdk.Duration(defaultBusyTimeout),
	}
}

// colType is the type of a mapped column.
type colType string

const (
	typeText    colType = "text"
	typeInteger colType = "integer"
	typeReal    colType = "real"
	typeBoolean colType = "boolean"
	typeJSON    colType = "json"
)

// typeAliases maps every accepted column_types value to its type.
var typeAliases = map[string]colType{
	"text": typeText, "string": typeText,
	"integer": typeInteger, "int": typeInteger, "bigint": typeInteger,
	"real": typeReal, "double": typeReal, "float": typeReal, "number": typeReal,
	"boolean": typeBoolean, "bool": typeBoolean,
	"json": typeJSON, "jsonb": typeJSON,
}

// column is a validated entry of the columns table.
type column struct {
	name string   // column name, a plain identifier
	path []string // dot path into the payload, split
	typ  colType
}

// baseColumns are the columns every table has; mapped columns may not
// reuse their names.
var baseColumns = []string{"id", "source", "route", "received_at", "payload", "inserted_at"}

// settings is a validated config.
type settings struct {
	driver      string
	path        string // sqlite
	dsn         string // postgres; a secret: never log or return it
	table       string
	schema      string   // postgres, optional
	columns     []column // sorted by name
	busyTimeout time.Duration
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// maxIdentLen is PostgreSQL's identifier limit (NAMEDATALEN-1); longer
// names would be silently truncated there.
const maxIdentLen = 63

func checkIdent(key, name string) error {
	if !identRE.MatchString(name) || len(name) > maxIdentLen {
		return fmt.Errorf("config key %q = %q must be a plain identifier (letters, digits, _; not starting with a digit; at most %d characters), e.g. \"events\"", key, name, maxIdentLen)
	}
	return nil
}

// parseConfig decodes raw over the defaults and validates it, reporting
// every problem, each naming its key and the fix. For postgres it reads the
// DSN with sdk.Secret and parses it, without connecting; no file is created
// and no connection opened.
func parseConfig(raw json.RawMessage) (settings, error) {
	c := defaultConfig()
	var s settings
	var errs []error
	if err := sdk.DecodeConfig(raw, &c); err != nil {
		errs = append(errs, err) // and go on: report every problem at once
	}

	s.driver = c.Driver
	switch c.Driver {
	case driverSQLite:
		s.path = c.Path
		if s.path == "" {
			s.path = defaultPath
		}
		if strings.ContainsRune(s.path, 0) {
			errs = append(errs, errors.New(`config key "path" contains a NUL byte`))
		}
		keys := configKeys(raw)
		for _, k := range []struct{ key, val string }{{"dsn_env", keys.DSNEnv}, {"dsn_file", keys.DSNFile}, {"schema", c.Schema}} {
			if k.val != "" {
				errs = append(errs, fmt.Errorf(`config key %q is for driver = "postgres"; with driver = "sqlite" set "path"`, k.key))
			}
		}
	case driverPostgres:
		if c.Path != "" {
			errs = append(errs, errors.New(`config key "path" is for driver = "sqlite"; with driver = "postgres" set "dsn_env" or "dsn_file"`))
		}
		// DecodeConfig read the DSN from dsn_env or dsn_file when one is
		// set (and reported why not); required here, for postgres only.
		keys := configKeys(raw)
		switch dsn := c.DSN; {
		case keys.DSNEnv == "" && keys.DSNFile == "" && !keys.inline:
			_, err := sdk.Secret("dsn", "", "")
			errs = append(errs, fmt.Errorf("config: %w", err))
		case dsn == "":
		default:
			if _, err := pgxpool.ParseConfig(dsn); err != nil {
				errs = append(errs, fmt.Errorf("config key dsn: %w", newRedactor(dsn).redact(err)))
			} else {
				s.dsn = dsn
			}
		}
		if c.Schema != "" {
			if err := checkIdent("schema", c.Schema); err != nil {
				errs = append(errs, err)
			}
			s.schema = c.Schema
		}
	default:
		errs = append(errs, fmt.Errorf(`config key "driver" = %q: use "sqlite" (an embedded file, the default) or "postgres"`, c.Driver))
	}

	s.table = c.Table
	if err := checkIdent("table", c.Table); err != nil {
		errs = append(errs, err)
	}

	s.busyTimeout = time.Duration(c.BusyTimeout)
	if s.busyTimeout < 0 || s.busyTimeout > time.Duration(1<<31-1)*time.Millisecond {
		errs = append(errs, fmt.Errorf(`config key "busy_timeout" = %v is out of range, e.g. "5s"`, s.busyTimeout))
	}

	cols, err := parseColumns(c.Columns, c.ColumnTypes)
	if err != nil {
		errs = append(errs, err)
	}
	s.columns = cols
	return s, errors.Join(errs...)
}

func parseColumns(columns, types map[string]string) ([]column, error) {
	var errs []error
	names := make([]string, 0, len(columns))
	for name := range columns {
		names = append(names, name)
	}
	slices.Sort(names)
	seen := map[string]string{} // lower-case name → name: SQLite names are case-insensitive
	var cols []column
	for _, name := range names {
		key := "columns." + name
		if err := checkIdent(key, name); err != nil {
			errs = append(errs, err)
			continue
		}
		lower := strings.ToLower(name)
		if slices.Contains(baseColumns, lower) {
			errs = append(errs, fmt.Errorf("config key %q: %q is a column every table has (%s); choose another name", key, name, strings.Join(baseColumns, ", ")))
			continue
		}
		if other, ok := seen[lower]; ok {
			errs = append(errs, fmt.Errorf("config key %q: %q and %q differ only in case; choose distinct names", key, other, name))
			continue
		}
		seen[lower] = name
		p := columns[name]
		path := strings.Split(p, ".")
		if p == "" || slices.Contains(path, "") {
			errs = append(errs, fmt.Errorf("config key %q = %q must be a dot path into the payload, e.g. \"data.callSid\"", key, p))
			continue
		}
		typ := typeText
		if t, ok := types[name]; ok {
			typ, ok = typeAliases[strings.ToLower(t)]
			if !ok {
				errs = append(errs, fmt.Errorf("config key %q = %q: use one of text, integer, real, boolean, json", "column_types."+name, t))
				continue
			}
		}
		cols = append(cols, column{name: name, path: path, typ: typ})
	}
	for name := range types {
		if _, ok := columns[name]; !ok {
			errs = append(errs, fmt.Errorf("config key %q names no column of \"columns\": add %s = \"path.in.payload\" to columns or remove it", "column_types."+name, name))
		}
	}
	return cols, errors.Join(errs...)
}

// secretKeys says which of dsn, dsn_env and dsn_file a config table
// wrote: whether they are allowed depends on the driver.
type secretKeys struct {
	DSNEnv  string `json:"dsn_env"`
	DSNFile string `json:"dsn_file"`
	inline  bool
}

// configKeys reads the secretKeys of a config table.
func configKeys(raw json.RawMessage) secretKeys {
	var k secretKeys
	json.Unmarshal(raw, &k) // DecodeConfig has reported any problem
	var table map[string]json.RawMessage
	json.Unmarshal(raw, &table)
	_, k.inline = table["dsn"]
	return k
}

// Describe lists the config keys, from the config struct; it does not
// depend on Configure.
func (*sink) Describe() sdk.Description {
	return sdk.DescribeConfig("Stores every event as a row of a SQL table: SQLite (an embedded file, the default) or PostgreSQL; idempotent on the event id.", defaultConfig())
}
