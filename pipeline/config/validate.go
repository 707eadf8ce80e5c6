package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/pipelined/pipelined/pipeline/rules"
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9_-]+$`)
	pluginRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	sourceRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// Validate checks the whole configuration, compiles every expression and
// returns errors.Join of every problem, each naming the key path and the fix
// (with file:line:col when the configuration came from [Parse]).
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	at := func(table string, idx int, key, format string, args ...any) {
		add(c.errAt(c.lineOf(table, idx, key), format, args...))
	}

	// [server], [admin], [log], [plugins]
	if _, _, err := net.SplitHostPort(c.Server.Listen); err != nil {
		at("server", -1, "listen", "server.listen: %q is not host:port (write e.g. %q)", c.Server.Listen, DefaultListen)
	}
	if c.Server.MaxBody <= 0 {
		at("server", -1, "max_body", `server.max_body: must be more than 0 (write e.g. "1MiB")`)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"read_header_timeout", c.Server.ReadHeaderTimeout}, {"read_timeout", c.Server.ReadTimeout},
		{"write_timeout", c.Server.WriteTimeout}, {"idle_timeout", c.Server.IdleTimeout},
		{"shutdown_timeout", c.Server.ShutdownTimeout},
	} {
		if d.v.Duration <= 0 {
			at("server", -1, d.key, `server.%s: must be more than 0 (write e.g. "30s")`, d.key)
		}
	}
	if _, port, err := net.SplitHostPort(c.Admin.Listen); err != nil {
		at("admin", -1, "listen", "admin.listen: %q is not host:port (write e.g. %q)", c.Admin.Listen, DefaultAdminListen)
	} else if c.Admin.Listen == c.Server.Listen && port != "0" { // port 0: each listener gets its own
		at("admin", -1, "listen", "admin.listen: %q is also server.listen; the admin API never shares the ingest listener: use another port (default %q)", c.Admin.Listen, DefaultAdminListen)
	}
	if strings.TrimSpace(c.Log.Dir) == "" {
		at("log", -1, "dir", "log.dir: must not be empty (default %q)", DefaultLogDir)
	}
	if c.Log.Retention.Duration <= 0 {
		at("log", -1, "retention", `log.retention: must be more than 0 (write e.g. "168h" or "7d")`)
	}
	switch c.Log.Backend {
	case "badger":
	case "jetstream":
		validateJetStream(c, at)
	default:
		at("log", -1, "backend", `log.backend: unknown backend %q (write backend = "badger" or "jetstream")`, c.Log.Backend)
	}
	for _, d := range c.Plugins.Dirs {
		if strings.TrimSpace(d) == "" {
			at("plugins", -1, "dirs", "plugins.dirs: empty directory name (remove it)")
		}
	}

	// [[source]]
	names := map[string]bool{}
	paths := map[string]string{}
	for i, s := range c.Sources {
		what := fmt.Sprintf("source %q", s.Name)
		if s.Name == "" {
			what = fmt.Sprintf("source #%d", i+1)
			at("source", i, "", "%s: name: missing (write name = \"...\")", what)
		} else if !sourceRE.MatchString(s.Name) {
			at("source", i, "name", "%s: name: use only letters, digits, '.', '_' and '-'", what)
		} else if names[s.Name] {
			at("source", i, "name", "%s: name: defined twice (source names must be unique)", what)
		}
		names[s.Name] = true
		switch {
		case !strings.HasPrefix(s.Path, "/"):
			at("source", i, "path", "%s: path: %q must start with \"/\" (write e.g. path = \"/hooks/%s\")", what, s.Path, s.Name)
		case paths[s.Path] != "":
			at("source", i, "path", "%s: path: %q is already the path of source %q (paths must be unique)", what, s.Path, paths[s.Path])
		default:
			paths[s.Path] = s.Name
		}
		if s.DedupKey != "" {
			if _, err := rules.CompileValue(s.DedupKey); err != nil {
				add(c.exprErr("source", i, "dedup_key", what, err))
			}
		}
		if strings.TrimSpace(s.Accept) != "" {
			if _, err := rules.CompileBool(s.Accept); err != nil {
				add(c.exprErr("source", i, "accept", what, err))
			}
		}
		if s.SchemaFile != "" {
			if _, err := c.Schema(i); err != nil {
				at("source", i, "schema_file", "%s: schema_file: %v", what, err)
			}
		}
	}
	c.validateDoor(at)

	// [[sink]]
	sinks := map[string]bool{}
	var sinkNames []string
	for i, s := range c.Sinks {
		what := fmt.Sprintf("sink %q", s.Name)
		switch {
		case s.Name == "":
			what = fmt.Sprintf("sink #%d", i+1)
			at("sink", i, "", "%s: name: missing (write name = \"...\")", what)
		case !nameRE.MatchString(s.Name):
			at("sink", i, "name", "%s: name: use only a-z, 0-9, '_' and '-'", what)
		case sinks[s.Name]:
			at("sink", i, "name", "%s: name: defined twice (sink names must be unique)", what)
		}
		if s.Name != "" && !sinks[s.Name] {
			sinkNames = append(sinkNames, s.Name)
		}
		sinks[s.Name] = true
		switch {
		case s.Plugin == "" && s.Command == "":
			at("sink", i, "", "%s: set plugin = \"name\" (binary pipelined-sink-name) or command = \"/path/to/binary\"", what)
		case s.Plugin != "" && s.Command != "":
			at("sink", i, "command", "%s: plugin and command are both set; keep one", what)
		case s.Plugin != "" && !pluginRE.MatchString(s.Plugin):
			at("sink", i, "plugin", "%s: plugin: %q is not a plugin name (a-z, 0-9, '_', '-'; the binary is pipelined-sink-<plugin>; use command for a path)", what, s.Plugin)
		}
		if s.SHA256 != "" && !sha256RE.MatchString(s.SHA256) {
			at("sink", i, "sha256", "%s: sha256: must be 64 hex characters (the output of sha256sum) or empty", what)
		}
		d := s.Delivery
		if d.BatchMax < 1 || d.BatchMax > 10000 {
			at("sink", i, "batch_max", "%s: delivery.batch_max: %d is out of range 1..10000", what, d.BatchMax)
		}
		if d.MaxAttempts < 1 {
			at("sink", i, "max_attempts", "%s: delivery.max_attempts: must be at least 1", what)
		}
		if d.BackoffMin.Duration <= 0 {
			at("sink", i, "backoff_min", "%s: delivery.backoff_min: must be more than 0", what)
		} else if d.BackoffMax.Duration < d.BackoffMin.Duration {
			at("sink", i, "backoff_max", "%s: delivery.backoff_max: %v is less than backoff_min %v", what, d.BackoffMax.Duration, d.BackoffMin.Duration)
		}
	}

	// [[route]]
	routes := map[string]bool{}
	for i, r := range c.Routes {
		what := fmt.Sprintf("route %q", r.Name)
		if r.Name == "" {
			what = fmt.Sprintf("route #%d", i+1)
			at("route", i, "", "%s: name: missing (write name = \"...\")", what)
		} else if routes[r.Name] {
			at("route", i, "name", "%s: name: defined twice (route names must be unique)", what)
		}
		routes[r.Name] = true
		if strings.TrimSpace(r.When) == "" {
			at("route", i, "", "%s: when: missing (write when = 'true' to route every event)", what)
		} else if _, err := rules.CompileBool(r.When); err != nil {
			add(c.exprErr("route", i, "when", what, err))
		}
		if r.Transform != "" {
			if _, err := rules.CompileValue(r.Transform); err != nil {
				add(c.exprErr("route", i, "transform", what, err))
			}
		}
		if len(r.To) == 0 {
			at("route", i, "", "%s: to: missing (write to = [\"sink-name\"])", what)
		}
		seen := map[string]bool{}
		for _, to := range r.To {
			switch {
			case !sinks[to] || to == "":
				defined := "none"
				if len(sinkNames) > 0 {
					defined = strings.Join(slices.Sorted(slices.Values(sinkNames)), ", ")
				}
				at("route", i, "to", "%s: to: unknown sink %q (defined sinks: %s)", what, to, defined)
			case seen[to]:
				at("route", i, "to", "%s: to: sink %q listed twice", what, to)
			}
			seen[to] = true
		}
	}
	return errors.Join(errs...)
}

// exprErr places an expression's compile error in the file.
func (c *Config) exprErr(table string, idx int, key, what string, err error) error {
	var se *rules.SyntaxError
	if errors.As(err, &se) {
		l, col := c.exprPos(table, idx, key, se.Line, se.Column)
		if l > 0 && col > 0 {
			return c.errAtCol(l, col, "%s: %s: %s", what, key, se.Msg)
		}
		return c.errAt(l, "%s: %s: %s (%d:%d in the expression)", what, key, se.Msg, se.Line, se.Column)
	}
	return c.errAt(c.lineOf(table, idx, key), "%s: %s: %v", what, key, err)
}
